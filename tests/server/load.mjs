// Load test for `rotkv serve`: N concurrent streaming clients (the official
// openai client) for D seconds; every response must complete (finish_reason
// and end of stream) without an error. Samples /metrics (RSS, KV blocks).
// usage: node load.mjs BASE_URL [CLIENTS=16] [SECONDS=60]
import OpenAI from "openai";

const base = process.argv[2] ?? "http://127.0.0.1:8080";
const clients = Number(process.argv[3] ?? 16), seconds = Number(process.argv[4] ?? 60);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "none", maxRetries: 0, timeout: 120_000 });
const model = (await client.models.list()).data[0].id;
const system = "You are a storyteller. You tell short, happy stories about animals and children.";
const stats = { requests: 0, complete: 0, errors: 0, tokens: 0, finish: {}, cached: 0, prompt: 0 };
const errors = [];
const end = Date.now() + seconds * 1000;

async function metrics() {
  const txt = await (await fetch(`${base}/metrics`)).text();
  const m = {};
  for (const line of txt.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    m[line.slice(0, i)] = Number(line.slice(i + 1));
  }
  return m;
}

async function worker(w) {
  let i = 0;
  while (Date.now() < end) {
    i++;
    stats.requests++;
    try {
      const chat = (w + i) % 3 !== 0;
      const max_tokens = 16 + ((w * 37 + i * 11) % 200);
      const args = { model, max_tokens, stream: true, stream_options: { include_usage: true }, seed: w * 1000 + i };
      if (i % 4 === 0) args.stop = ["."];
      const stream = chat
        ? await client.chat.completions.create({ ...args, messages: [
            { role: "system", content: system },
            { role: "user", content: `Tell story ${i} about friend ${w}` }] })
        : await client.completions.create({ ...args, prompt: `Once upon a time, friend ${w} had ${i} apples.` });
      let fin = null, usage = null;
      for await (const c of stream) {
        if (c.usage) usage = c.usage;
        fin = c.choices?.[0]?.finish_reason ?? fin;
      }
      if (!fin || !usage) throw new Error(`incomplete response: finish=${fin} usage=${JSON.stringify(usage)}`);
      stats.complete++;
      stats.tokens += usage.completion_tokens;
      stats.prompt += usage.prompt_tokens;
      stats.cached += usage.prompt_tokens_details?.cached_tokens ?? 0;
      stats.finish[fin] = (stats.finish[fin] ?? 0) + 1;
    } catch (e) {
      stats.errors++;
      if (errors.length < 10) errors.push(String(e?.message ?? e));
    }
  }
}

const t0 = Date.now();
const rss = [];
const sampler = setInterval(async () => {
  try { rss.push((await metrics())["rotkv_process_resident_bytes"]); } catch { /* ignore */ }
}, 5000);
await Promise.all([...Array(clients).keys()].map(worker));
clearInterval(sampler);
const secs = (Date.now() - t0) / 1000;
await new Promise((r) => setTimeout(r, 300));
const m = await metrics();
const out = {
  clients, seconds: Number(secs.toFixed(1)), ...stats, errors_sample: errors,
  tokens_per_second: Number((stats.tokens / secs).toFixed(1)),
  rss_mib: rss.map((x) => Number((x / 1048576).toFixed(1))),
  kv_after: {
    budget: m["rotkv_kv_blocks_budget"], used: m["rotkv_kv_blocks_used"], reserved: m["rotkv_kv_blocks_reserved"],
    prefix_cache: m["rotkv_kv_blocks_prefix_cache"], free: m["rotkv_kv_blocks_free"],
    slots_active: m["rotkv_slots_active"], queue: m["rotkv_queue_length"],
  },
};
console.log(JSON.stringify(out, null, 1));
const kvOk = out.kv_after.reserved === 0 && out.kv_after.used === out.kv_after.prefix_cache &&
  out.kv_after.free + out.kv_after.prefix_cache === out.kv_after.budget && out.kv_after.slots_active === 0;
// stable: no more than 25% (+8 MiB) growth over the second half of the run
// (under ASan the allocator's quarantine fills during the first half, then stays flat)
const rssOk = rss.length < 4 || rss.at(-1) <= rss[Math.floor(rss.length / 2)] * 1.25 + 8 * 1048576;
if (stats.errors || stats.complete !== stats.requests || !kvOk || !rssOk) {
  console.log(`LOAD FAILED: errors=${stats.errors} kvOk=${kvOk} rssOk=${rssOk}`);
  process.exit(1);
}
console.log("LOAD OK");
