#!/usr/bin/env python3
"""Abuse test for `rotkv serve`: N malformed, oversized, wrongly typed and
abruptly closed requests over raw sockets (8 threads); every request that gets
an answer must get the right status, and the server must stay up.

usage: abuse.py HOST PORT [N=1000] [MAX_BODY=1048576]"""
import json
import random
import socket
import sys
import threading

HOST, PORT = sys.argv[1], int(sys.argv[2])
N = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
MAX_BODY = int(sys.argv[4]) if len(sys.argv) > 4 else 1 << 20


def req(method, path, body=b"", headers=None, content_length=None):
    h = {"Host": f"{HOST}:{PORT}", "Content-Type": "application/json", "Connection": "close"}
    h.update(headers or {})
    if content_length is None:
        content_length = len(body)
    if content_length is not False:
        h["Content-Length"] = str(content_length)
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    return head.encode() + body


def status_of(sock):
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, socket.timeout, BrokenPipeError):
        return None
    if not data.startswith(b"HTTP/1."):
        return None
    return int(data.split(b" ")[1])


def exchange(raw, close_after_send=False, read_some=0):
    s = socket.create_connection((HOST, PORT), timeout=60)
    try:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early (413) and closed
        if close_after_send:
            return "closed"
        if read_some:
            s.recv(read_some)
            return "closed"
        return status_of(s)
    finally:
        s.close()


def chat(**kw):
    d = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    d.update(kw)
    return json.dumps(d).encode()


CASES = [
    ("malformed json", lambda: exchange(req("POST", "/v1/chat/completions", b'{"messages": [')), {400}),
    ("not an object", lambda: exchange(req("POST", "/v1/completions", b'"hello"')), {400}),
    ("wrong type max_tokens", lambda: exchange(req("POST", "/v1/chat/completions", chat(max_tokens="lots"))), {400}),
    ("wrong type messages", lambda: exchange(req("POST", "/v1/chat/completions", b'{"messages": {"a": 1}}')), {400}),
    ("out of range top_p", lambda: exchange(req("POST", "/v1/chat/completions", chat(top_p=7))), {400}),
    ("negative max_tokens", lambda: exchange(req("POST", "/v1/completions", b'{"prompt": "x", "max_tokens": -5}')), {400}),
    ("unknown model", lambda: exchange(req("POST", "/v1/chat/completions", chat(model="nope"))), {404}),
    ("unknown path", lambda: exchange(req("GET", "/v1/engines")), {404}),
    ("wrong method", lambda: exchange(req("DELETE", "/v1/models")), {405}),
    ("oversized content-length", lambda: exchange(req("POST", "/v1/completions", b"{" * 1000, content_length=MAX_BODY + 10)), {413, None}),
    ("oversized body", lambda: exchange(req("POST", "/v1/completions", b" " * (MAX_BODY + 100))), {413, None}),
    ("oversized chunked body", lambda: exchange(
        req("POST", "/v1/completions", content_length=False, headers={"Transfer-Encoding": "chunked"}) +
        b"".join(b"%x\r\n%s\r\n" % (65536, b" " * 65536) for _ in range(MAX_BODY // 65536 + 2)) + b"0\r\n\r\n"), {413, None}),
    ("deeply nested json", lambda: exchange(req("POST", "/v1/completions", b"[" * 20000 + b"]" * 20000)), {400, 413}),
    ("invalid utf-8", lambda: exchange(req("POST", "/v1/completions", b'{"prompt": "\xff\xfe bad \xc3", "max_tokens": 4}')), {200, 400}),
    ("nul in string", lambda: exchange(req("POST", "/v1/completions", b'{"prompt": "a\\u0000b", "max_tokens": 4}')), {200, 400}),
    ("garbage request line", lambda: exchange(b"GARBAGE\r\n\r\n"), {400, 505, None}),
    ("huge header", lambda: exchange(req("GET", "/v1/models", headers={"X-Big": "a" * 200000})), {400, 413, 431, None}),
    ("closed mid-headers", lambda: exchange(b"POST /v1/completions HTTP/1.1\r\nContent-Len", close_after_send=True), {"closed"}),
    ("closed mid-body", lambda: exchange(req("POST", "/v1/completions", b'{"prompt": "x"', content_length=500), close_after_send=True), {"closed"}),
    ("closed after request", lambda: exchange(req("POST", "/v1/completions", b'{"prompt": "Once", "max_tokens": 400}'), close_after_send=True), {"closed"}),
    ("closed during stream", lambda: exchange(req("POST", "/v1/chat/completions", chat(stream=True, max_tokens=400)), read_some=64), {"closed"}),
    ("valid request", lambda: exchange(req("POST", "/v1/completions", b'{"prompt": "Once upon a time", "max_tokens": 4}')), {200}),
]

results = {}
bad = []
lock = threading.Lock()
rng = random.Random(1234)
plan = [rng.randrange(len(CASES)) for _ in range(N)]


def run(idx):
    name, fn, ok = CASES[plan[idx]]
    try:
        got = fn()
    except (ConnectionRefusedError, OSError) as e:
        got = f"exception {e!r}"
    with lock:
        results.setdefault(name, {}).setdefault(str(got), 0)
        results[name][str(got)] += 1
        if got not in ok:
            bad.append((name, got))


def worker(t):
    for i in range(t, N, 8):
        run(i)


threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()

alive = exchange(req("GET", "/health")) == 200
print(json.dumps({"requests": N, "by_case": results, "unexpected": bad[:20], "n_unexpected": len(bad),
                  "server_alive": alive}, indent=1))
print("ABUSE OK" if alive and not bad else "ABUSE FAILED")
sys.exit(0 if alive and not bad else 1)
