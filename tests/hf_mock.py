#!/usr/bin/env python3
"""hf_mock.py — a loopback mock of the Hugging Face Hub for tests/test_pull.c.

    python3 tests/hf_mock.py --port 0 [--log FILE] [--tiny MODEL.gguf] [--watch-stdin]

Listens on 127.0.0.1 and 127.0.0.2 (one port, printed as the first line of
stdout) and serves the routes rotkv uses:

    GET /api/models/OWNER/NAME/tree/main?recursive=true   the file list (JSON)
    GET /OWNER/NAME/resolve/main/PATH                      a file (Range: bytes=N-)
    GET /_cdn/OWNER/NAME/PATH                              where test/redirect points

Repositories, with generated (deterministic random) content:
    test/multi     Model-Q4_K_M, Model-Q4_K_S, Model-Q8_0, sub/Model-F16, mmproj-Model-F16 (.gguf) + README.md
    test/single    only.gguf + mmproj-only-F16.gguf
    test/ambig     A-Q8_0.gguf, B-F16.gguf (no Q4_K_M)
    test/nolfs     small.gguf, a non-LFS file (no sha256 published)
    test/gated     401 unless "Authorization: Bearer hf_test_token"
    test/corrupt   one byte of the served file differs from the published sha256
    test/cut       the first transfer of each file stops halfway; Range requests work
    test/norange   like test/cut, but Range is ignored (200, the whole file)
    test/slow      sends 1000 bytes, then stalls for 60 s
    test/redirect  resolve answers 302 to http://127.0.0.2:PORT/_cdn/...
    test/split     Big-Q4_K_M-0000k-of-00003.gguf, k = 1..3
    test/paged     5 files, listed 2 per page (Link: <...&cursor=N>; rel="next")
    test/tiny      the --tiny file (a real model), if given
    test/badjson   the file list is an HTML page
Anything else is 404. Every request is appended to --log as one line
"REQ host path range=... auth=...", after "MANIFEST repo/path sha256 size"
lines for every published file. With --watch-stdin the server exits when its
stdin closes (its parent died); it always exits after --lifetime seconds.
"""
import argparse
import hashlib
import http.server
import json
import os
import random
import sys
import threading
import time
import urllib.parse

TOKEN = "hf_test_token"


def blob(seed, size):
    return random.Random(seed).randbytes(size)


class Repo:
    def __init__(self, behaviour="", lfs=True):
        self.behaviour = behaviour
        self.lfs = lfs
        self.files = {}   # path -> published bytes
        self.served = {}  # path -> bytes actually served
        self.hits = {}    # path -> number of resolve requests

    def add(self, path, data, served=None):
        self.files[path] = data
        self.served[path] = data if served is None else served


def build_repos(tiny):
    r = {}
    m = r["test/multi"] = Repo()
    for i, (p, n) in enumerate([("Model-Q4_K_M.gguf", 300000), ("Model-Q4_K_S.gguf", 200000),
                                ("Model-Q8_0.gguf", 250000), ("sub/Model-F16.gguf", 100000),
                                ("mmproj-Model-F16.gguf", 50000)]):
        m.add(p, blob(100 + i, n))
    m.add("README.md", b"# test/multi\n")
    s = r["test/single"] = Repo()
    s.add("only.gguf", blob(200, 64000))
    s.add("mmproj-only-F16.gguf", blob(201, 30000))
    a = r["test/ambig"] = Repo()
    a.add("A-Q8_0.gguf", blob(210, 40000))
    a.add("B-F16.gguf", blob(211, 40000))
    r["test/nolfs"] = Repo(lfs=False)
    r["test/nolfs"].add("small.gguf", blob(220, 3000))
    r["test/gated"] = Repo("gated")
    r["test/gated"].add("Gated-Q4_K_M.gguf", blob(230, 64000))
    c = r["test/corrupt"] = Repo()
    good = blob(240, 256000)
    bad = bytearray(good)
    bad[123457] ^= 0x40
    c.add("Corrupt-Q4_K_M.gguf", good, bytes(bad))
    r["test/cut"] = Repo("cut")
    r["test/cut"].add("Cut-Q4_K_M.gguf", blob(250, 1 << 20))
    r["test/norange"] = Repo("norange")
    r["test/norange"].add("Norange-Q4_K_M.gguf", blob(255, 512000))
    r["test/slow"] = Repo("slow")
    r["test/slow"].add("Slow-Q4_K_M.gguf", blob(260, 256000))
    r["test/redirect"] = Repo("redirect")
    r["test/redirect"].add("Redirect-Q4_K_M.gguf", blob(270, 256000))
    pg = r["test/paged"] = Repo("paged")
    for i, q in enumerate(["Q2_K", "Q4_K_M", "Q6_K", "Q8_0", "F16"]):
        pg.add("Paged-%s.gguf" % q, blob(290 + i, 20000))
    sp = r["test/split"] = Repo()
    for k in range(1, 4):
        sp.add("Big-Q4_K_M-%05d-of-00003.gguf" % k, blob(280 + k, 100000))
    if tiny:
        with open(tiny, "rb") as f:
            r["test/tiny"] = Repo()
            r["test/tiny"].add(os.path.basename(tiny), f.read())
    return r


class Hub:
    def __init__(self, repos, log_path):
        self.repos = repos
        self.port = 0
        self.lock = threading.Lock()
        self.log = open(log_path, "a") if log_path else None
        for name, repo in repos.items():
            for p, data in repo.files.items():
                self.write("MANIFEST %s/%s %s %d" % (name, p, hashlib.sha256(data).hexdigest(), len(data)))

    def write(self, line):
        if self.log:
            with self.lock:
                self.log.write(line + "\n")
                self.log.flush()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    hub = None

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, body=b"", ctype="application/json", headers=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def error(self, code, msg):
        self.reply(code, json.dumps({"error": msg}).encode())

    def authorized(self, repo):
        return repo.behaviour != "gated" or self.headers.get("Authorization") == "Bearer " + TOKEN

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        self.hub.write("REQ %s %s range=%s auth=%s" % (self.headers.get("Host", "-"), path,
                                                       self.headers.get("Range", "-"),
                                                       self.headers.get("Authorization", "none")))
        parts = path.strip("/").split("/")
        if len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4:6] == ["tree", "main"]:
            return self.tree("/".join(parts[2:4]), urllib.parse.parse_qs(url.query))
        if len(parts) >= 4 and parts[0] == "_cdn":
            return self.serve("/".join(parts[1:3]), "/".join(parts[3:]), cdn=True)
        if len(parts) >= 5 and parts[2:4] == ["resolve", "main"]:
            return self.serve("/".join(parts[:2]), "/".join(parts[4:]))
        self.error(404, "not found")

    def tree(self, name, query):
        if name == "test/badjson":
            return self.reply(200, b"<html>a captive portal</html>", "text/html")
        repo = self.hub.repos.get(name)
        if repo is None:
            return self.error(404, "Repository not found")
        if not self.authorized(repo):
            return self.error(401, "Access to this repository is restricted")
        out, dirs = [], set()
        for p, data in sorted(repo.files.items()):
            if "/" in p:
                dirs.add(p.rsplit("/", 1)[0])
            e = {"type": "file", "path": p, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
            if repo.lfs and p.endswith(".gguf"):
                e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            out.append(e)
        out += [{"type": "directory", "path": d, "size": 0, "oid": "0" * 40} for d in sorted(dirs)]
        headers = []
        if repo.behaviour == "paged":
            at = int(query.get("cursor", ["0"])[0])
            if at + 2 < len(out):
                headers.append(("Link", '<http://127.0.0.1:%d/api/models/%s/tree/main?recursive=true&cursor=%d>; '
                                        'rel="next"' % (self.hub.port, name, at + 2)))
            out = out[at:at + 2]
        self.reply(200, json.dumps(out).encode(), headers=headers)

    def serve(self, name, path, cdn=False):
        repo = self.hub.repos.get(name)
        if repo is None or path not in repo.files:
            return self.error(404, "Entry not found")
        if not self.authorized(repo):
            return self.error(401, "Access to this repository is restricted")
        if repo.behaviour == "redirect" and not cdn:
            loc = "http://127.0.0.2:%d/_cdn/%s/%s" % (self.hub.port, name, urllib.parse.quote(path))
            return self.reply(302, b"", "text/plain", [("Location", loc)])
        with self.hub.lock:
            repo.hits[path] = hit = repo.hits.get(path, 0) + 1
        data = repo.served[path]
        start = 0
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and repo.behaviour != "norange":
            start = int(rng[6:].split("-")[0] or 0)
            if start >= len(data):
                return self.reply(416, b"", "text/plain", [("Content-Range", "bytes */%d" % len(data))])
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
        self.end_headers()
        if repo.behaviour in ("cut", "norange") and hit == 1:
            self.wfile.write(body[:len(body) // 2])  # then the connection closes
            return
        if repo.behaviour == "slow":
            self.wfile.write(body[:1000])
            self.wfile.flush()
            time.sleep(60)
            return
        self.wfile.write(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log")
    ap.add_argument("--tiny")
    ap.add_argument("--watch-stdin", action="store_true")
    ap.add_argument("--lifetime", type=float, default=900)
    a = ap.parse_args()
    Handler.hub = hub = Hub(build_repos(a.tiny), a.log)
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)]
    hub.port = servers[0].server_address[1]
    try:
        servers.append(http.server.ThreadingHTTPServer(("127.0.0.2", hub.port), Handler))
    except OSError as e:
        print("hf_mock: cannot listen on 127.0.0.2:%d: %s" % (hub.port, e), file=sys.stderr)
    for s in servers:
        s.daemon_threads = True
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print(hub.port, flush=True)
    if a.watch_stdin:
        threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    time.sleep(a.lifetime)
    os._exit(0)


if __name__ == "__main__":
    main()
