#!/usr/bin/env python3
"""Instructions per request of one proxy, counted by callgrind (Python stdlib only).

Starts the command after `--` under `valgrind --tool=callgrind` (one process: keyward with one
worker, nginx with `master_process off`), waits until http://127.0.0.1:PORT/PATH answers 200,
warms it with --warm requests, zeroes the counters, sends --requests keep-alive GETs with
h2load (--conns connections, X-Api-Key when --key is given), dumps the counters and stops the
process. Prints `RESULT instructions_per_request <n>` and `RESULT requests <n>`.

Counted instructions are the same from run to run on a loaded machine, where wall-clock and
CPU time are not; they count user space only (the kernel's share of a request is about the
same for every proxy: two reads and two writes), and a `rep stos` counts once per byte.
"""
import argparse
import glob
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request


def answers(url, key, deadline):
    headers = {"X-Api-Key": key} if key else {}
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def h2load(url, key, requests, conns):
    args = ["h2load", "--h1", "-n", str(requests), "-c", str(conns), url]
    if key:
        args[1:1] = ["-H", f"X-Api-Key: {key}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600).stdout
    for line in out.splitlines():
        if line.startswith("status codes:"):
            ok = int(line.split()[2])
            if ok != requests:
                sys.exit(f"instructions.py: {ok} of {requests} answered 2xx:\n{out}")
            return
    sys.exit(f"instructions.py: h2load printed no status codes:\n{out}")


def total(path):
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/")
    p.add_argument("--key", default="")
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--warm", type=int, default=500)
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--deadline", type=float, default=300)
    p.add_argument("command", nargs="+")
    a = p.parse_args()
    deadline = time.monotonic() + a.deadline
    url = f"http://127.0.0.1:{a.port}{a.path}"
    with tempfile.TemporaryDirectory(prefix="keyward-callgrind.") as tmp:
        out = os.path.join(tmp, "cg.out")
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *a.command],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            if not answers(url, a.key, deadline):
                sys.exit(f"instructions.py: {url} never answered 200")
            h2load(url, a.key, a.warm, a.conns)
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True,
                           check=True, timeout=60)
            h2load(url, a.key, a.requests, a.conns)
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True,
                           check=True, timeout=60)
            dumped = None
            while dumped is None and time.monotonic() < deadline:
                dumps = glob.glob(out + ".*")
                dumped = total(dumps[0]) if dumps else None
                time.sleep(0.2)
            if dumped is None:
                sys.exit("instructions.py: callgrind wrote no dump")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    print(f"RESULT instructions_per_request {dumped / a.requests:.0f}")
    print(f"RESULT requests {a.requests}")


if __name__ == "__main__":
    main()
