#!/usr/bin/env python3
"""crashsafe.py — kill-during-save test of rotkv's file writers (python3 stdlib).

For each writer — `rotkv calibrate -o`, a slot save through the server API
(POST /slots/0?action=save) and `rotkv perplexity --kl-divergence-base` —
the destination first holds a valid older file (OLD); the writer is started to
replace it with NEW and killed with SIGKILL at a random moment, ITERATIONS
times. After every kill the destination must be byte-equal to OLD or NEW, and
at most one temporary (the killed process's DEST.tmp.PID) may be left beside it:
the next writer removes it. A leftover temporary is never loaded: the loaders
open DEST, the calibration found beside a model is MODEL.kvcal, and the server
refuses to restore a slot file named like a temporary.

    python3 tests/crashsafe.py [--iterations 100] [--seed 1] [--only calib,slot,kld]

Exit status 0 when every check passed, 1 on a failure, 77 (skip) without
../shared/models/tinystories-656k-f32.gguf. tests/test_crashsafe.c runs it
with 20 iterations in `make test`.
"""
import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.environ.get("ROTKV_SHARED") or os.path.join(os.path.dirname(ROOT), "shared")
FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL: " + what, flush=True)
    return cond


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def temps(dest):
    return sorted(glob.glob(glob.escape(dest) + ".tmp.*"))


def kill_loop(name, n, rnd, dest, old, new, start, window):
    """start() launches the writer (a Popen, or None after a failure); it is killed
    after a random delay: a third of the time anywhere in [0, 1.1 window), a third
    near its end, where the save is (window = how long a full run took), and a
    third right inside the save: once its temporary DEST.tmp.PID appears (polled),
    after 0-2 ms. Returns the outcome counts."""
    got = {"old": 0, "new": 0, "temp left": 0}
    for i in range(n):
        with open(dest, "wb") as f:   # the older valid file (a leftover temporary stays)
            f.write(old)
        p = start()
        if not check(p is not None, "%s #%d: the writer did not start" % (name, i)):
            break
        how = rnd.randrange(3)
        if how == 0: time.sleep(rnd.uniform(0, 1.1 * window))
        elif how == 1: time.sleep(rnd.uniform(0.8 * window, 1.1 * window))
        else:
            mine = "%s.tmp.%d" % (dest, p.pid)
            t_end = time.time() + 30
            while not os.path.exists(mine) and p.poll() is None and time.time() < t_end: pass
            time.sleep(rnd.uniform(0, 0.002))
        p.send_signal(signal.SIGKILL)
        p.wait()
        data = read(dest)
        if data == old: got["old"] += 1
        elif data == new: got["new"] += 1
        else: check(False, "%s #%d: %s is neither the old nor the new file (%s bytes)"
                    % (name, i, dest, None if data is None else len(data)))
        left = temps(dest)
        if left: got["temp left"] += 1
        check(len(left) <= 1, "%s #%d: temporaries pile up: %s" % (name, i, left))
    print("%s: %d kills: %d left the old file, %d the new one; %d left a temporary"
          % (name, n, got["old"], got["new"], got["temp left"]), flush=True)
    return got


def timed(cmd, **kw):
    t = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    return p, time.time() - t


# ------------------------------------------------------------ calibrate

def test_calib(a, rnd, work):
    model = os.path.join(work, "tiny.gguf")       # the calibration beside it is tiny.kvcal
    os.symlink(a.model, model)
    dest = os.path.join(work, "tiny.kvcal")
    base = [a.rotkv, "calibrate", "-m", model, "-t", "1"]
    p, _ = timed(base + ["--chunks", "2", "-o", dest])
    old = read(dest)
    if not check(p.returncode == 0 and old, "calibrate (old) failed: %s" % p.stderr.decode()[-300:]): return
    p, dt = timed(base + ["-o", dest])
    new = read(dest)
    check(p.returncode == 0 and new and new != old, "calibrate (new) failed or equals the old one")
    p, _ = timed(base + ["-o", dest])
    if not check(read(dest) == new, "calibrate is not deterministic: cannot compare bytes"): return

    def start():
        return subprocess.Popen(base + ["-o", dest], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_loop("calibrate -o", a.iterations, rnd, dest, old, new, start, dt)
    # the file there loads; a leftover temporary (left in place) is not what gets loaded
    for t in temps(dest): os.utime(t)
    p = subprocess.run([a.rotkv, "run", "-m", model, "-p", "Once", "-n", "1", "-t", "1", "-ctk", "auto3.5",
                        "-ctv", "auto3.5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = p.stderr.decode(errors="replace")
    check(p.returncode == 0 and ("KV calibration %s " % dest) in err and ".tmp." not in err,
          "run -m %s did not load %s: %s" % (model, dest, err[-400:]))
    # a torn calibration does not load either (the checksum): the first half of the new file
    torn = os.path.join(work, "torn.kvcal")
    with open(torn, "wb") as f: f.write(new[:len(new) // 2])
    p = subprocess.run([a.rotkv, "run", "-m", model, "--kv-calib", torn, "-p", "Once", "-n", "1", "-t", "1"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    check(p.returncode != 0, "a torn calibration file loaded")


# ------------------------------------------------------------ slot save

class Server:
    def __init__(self, a, slot_dir, log):
        self.log = log
        with open(log, "wb") as lf:
            self.p = subprocess.Popen([a.rotkv, "serve", "-m", a.model, "--port", "0", "-t", "1", "-np", "1",
                                       "--slot-save-path", slot_dir], stdout=subprocess.DEVNULL, stderr=lf)
        self.port = 0
        for _ in range(600):
            txt = read(log).decode(errors="replace")
            k = txt.find("listening on http://127.0.0.1:")
            if k >= 0:
                self.port = int(txt[k + 30:].split("/")[0].split()[0].rstrip(":"))
                break
            if self.p.poll() is not None: break
            time.sleep(0.02)

    def post(self, path, body, timeout=60):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path), data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            return 0, str(e).encode()

    def kill(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait()


def test_slot(a, rnd, work):
    slots = os.path.join(work, "slots")
    os.mkdir(slots)
    dest = os.path.join(slots, "t.slot")
    log = os.path.join(work, "serve.log")
    prompt_old = {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}
    prompt_new = {"prompt": "The little dog ran to the park", "max_tokens": 8, "temperature": 0}

    def filled(prompt):
        s = Server(a, slots, log)
        if not s.port:
            s.kill()
            return None
        st, _ = s.post("/v1/completions", prompt)
        if not check(st == 200, "completion failed: %d" % st):
            s.kill()
            return None
        return s

    s = filled(prompt_old)
    if not check(s is not None, "server did not start: %s" % (read(log) or b"").decode()[-300:]): return
    check(s.post("/slots/0?action=save", {"filename": "t.slot"})[0] == 200, "slot save (old) failed")
    s.kill()
    old = read(dest)
    s = filled(prompt_new)
    t = time.time()
    check(s.post("/slots/0?action=save", {"filename": "t.slot"})[0] == 200, "slot save (new) failed")
    dt = time.time() - t
    new = read(dest)
    s.kill()
    s = filled(prompt_new)
    s.post("/slots/0?action=save", {"filename": "t.slot"})
    s.kill()
    if not check(old and new and old != new and read(dest) == new, "slot saves are not reproducible"): return

    def start():
        s = filled(prompt_new)   # the save is what gets killed, not the start-up
        if s is None: return None
        threading.Thread(target=s.post, args=("/slots/0?action=save", {"filename": "t.slot"}, 10), daemon=True).start()
        return s.p
    kill_loop("slot save", a.iterations, rnd, dest, old, new, start, max(dt * 2, 0.002))
    # a leftover temporary can never be restored; the slot file can
    s = filled(prompt_old)
    fake = "t.slot.tmp.%d" % 999999
    shutil.copy(os.path.join(slots, "t.slot"), os.path.join(slots, fake))
    st, body = s.post("/slots/0?action=restore", {"filename": fake})
    check(st == 400, "restoring a temporary's name was not refused: %d %s" % (st, body[:200]))
    st, body = s.post("/slots/0?action=restore", {"filename": "t.slot"})
    check(st == 200, "restoring t.slot failed: %d %s" % (st, body[:200]))
    s.kill()
    os.remove(os.path.join(slots, fake))


# ------------------------------------------------------------ KLD base

def test_kld(a, rnd, work):
    text = os.path.join(SHARED, "golden", "heldout.txt")
    if not os.path.exists(text):
        print("kld: skipped (no %s)" % text)
        return
    dest = os.path.join(work, "base.kld")
    base = [a.rotkv, "perplexity", "-m", a.model, "-f", text, "-c", "128", "-t", "1", "--kl-divergence-base", dest]
    p, _ = timed(base + ["--chunks", "2"])
    old = read(dest)
    if not check(p.returncode == 0 and old, "perplexity (old) failed: %s" % p.stderr.decode()[-300:]): return
    p, dt = timed(base + ["--chunks", "6"])
    new = read(dest)
    check(p.returncode == 0 and new and new != old, "perplexity (new) failed")

    def start():
        return subprocess.Popen(base + ["--chunks", "6"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_loop("perplexity --kl-divergence-base", a.iterations, rnd, dest, old, new, start, dt)
    chunks = "6" if read(dest) == new else "2"
    p = subprocess.run(base + ["--chunks", chunks, "--kl-divergence"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    check(p.returncode == 0, "the KLD base file does not load: %s" % p.stderr.decode()[-300:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--only", default="calib,slot,kld")
    ap.add_argument("--rotkv", default=os.environ.get("ROTKV_BIN") or os.path.join(ROOT, "build", "rotkv"))
    ap.add_argument("--model", default=os.path.join(SHARED, "models", "tinystories-656k-f32.gguf"))
    a = ap.parse_args()
    a.rotkv, a.model = os.path.abspath(a.rotkv), os.path.abspath(a.model)
    if not os.path.exists(a.model):
        print("crashsafe: skipped: no %s" % a.model)
        return 77
    print("crashsafe: seed %d, %d iterations" % (a.seed, a.iterations), flush=True)
    rnd = random.Random(a.seed)
    # on disk beside the build (not tmpfs), so fsync takes real time
    work = tempfile.mkdtemp(prefix="crashsafe-", dir=os.path.join(ROOT, "build"))
    try:
        tests = {"calib": test_calib, "slot": test_slot, "kld": test_kld}
        for name in a.only.split(","):
            d = os.path.join(work, name)
            os.mkdir(d)
            tests[name](a, rnd, d)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("crashsafe: %s" % ("%d failure(s)" % len(FAILS) if FAILS else "all checks passed"))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
