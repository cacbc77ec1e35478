// Drives a running `rotkv serve` with the official openai npm client.
// usage: node openai_client.mjs BASE_URL [API_KEY]   (BASE_URL like http://127.0.0.1:8080/v1)
// Exits non-zero on the first failed check; prints one line per check.
import OpenAI from "openai";
import assert from "node:assert/strict";

const baseURL = process.argv[2] ?? "http://127.0.0.1:8080/v1";
const client = new OpenAI({ baseURL, apiKey: process.argv[3] ?? "none", maxRetries: 0, timeout: 60_000 });
let passed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e?.stack ?? e}`);
    process.exit(1);
  }
}

const models = await client.models.list();
const model = models.data[0].id;

await check("models.list names the model", async () => {
  assert.equal(models.data.length, 1);
  assert.equal(models.data[0].object, "model");
});

await check("chat.completions.create (non-streaming) with usage", async () => {
  const r = await client.chat.completions.create({
    model, max_tokens: 16, temperature: 0,
    messages: [{ role: "system", content: "You tell stories." }, { role: "user", content: "Once upon a time" }],
  });
  assert.equal(r.object, "chat.completion");
  assert.equal(r.choices[0].message.role, "assistant");
  assert.equal(typeof r.choices[0].message.content, "string");
  assert.ok(["stop", "length"].includes(r.choices[0].finish_reason));
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  assert.ok(r.usage.completion_tokens <= 16);
});

let streamed = "";
await check("chat stream: deltas, finish_reason, usage chunk", async () => {
  const stream = await client.chat.completions.create({
    model, max_tokens: 24, temperature: 0, stream: true, stream_options: { include_usage: true },
    messages: [{ role: "user", content: "Tell me about a cat" }],
  });
  let finish = null, usage = null, n = 0;
  for await (const chunk of stream) {
    n++;
    if (chunk.usage) usage = chunk.usage;
    const c = chunk.choices[0];
    if (!c) continue;
    if (c.delta?.content) streamed += c.delta.content;
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.ok(n > 2);
  assert.ok(finish === "length" || finish === "stop");
  assert.ok(usage && usage.completion_tokens > 0);
  const full = await client.chat.completions.create({
    model, max_tokens: 24, temperature: 0, messages: [{ role: "user", content: "Tell me about a cat" }],
  });
  assert.equal(streamed, full.choices[0].message.content, "streamed text equals the non-streamed text");
});

await check("completions.create with a stop sequence", async () => {
  const r = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 40, temperature: 0, stop: ["Spot"] });
  assert.equal(r.choices[0].finish_reason, "stop");
  assert.ok(!r.choices[0].text.includes("Spot"));
});

await check("completions stream with stop", async () => {
  const stream = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 40, temperature: 0, stop: "Spot", stream: true });
  let text = "", finish = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.text ?? "";
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(finish, "stop");
  assert.ok(!text.includes("Spot"));
});

await check("unknown model -> 404 NotFoundError", async () => {
  await assert.rejects(client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "x" }] }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
});

await check("out-of-range temperature -> 400 BadRequestError", async () => {
  await assert.rejects(client.chat.completions.create({ model, temperature: 9, messages: [{ role: "user", content: "x" }] }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && /temperature/.test(e.message));
});

await check("aborted stream, then the server still answers", async () => {
  const ac = new AbortController();
  const stream = await client.completions.create({ model, prompt: "Once", max_tokens: 480, stream: true }, { signal: ac.signal });
  let n = 0;
  try {
    for await (const _ of stream) { if (++n === 3) ac.abort(); }
  } catch (e) { /* the abort */ }
  const r = await client.completions.create({ model, prompt: "Once", max_tokens: 4 });
  assert.equal(r.usage.completion_tokens, 4);
});

await check("8 concurrent streams all complete", async () => {
  const one = async (i) => {
    const s = await client.chat.completions.create({ model, max_tokens: 64, seed: i, stream: true,
      messages: [{ role: "user", content: `Story number ${i}` }] });
    let fin = null;
    for await (const c of s) fin = c.choices[0]?.finish_reason ?? fin;
    return fin;
  };
  const fins = await Promise.all([...Array(8).keys()].map(one));
  assert.ok(fins.every((f) => f === "stop" || f === "length"), JSON.stringify(fins));
});

console.log(`openai client: ${passed} checks passed`);
