#!/usr/bin/env python3
"""Start to ready: how long keyward takes from exec to its first 200 from /readyz (Python
stdlib only).

Starts BIN --config CONFIG RUNS times, one after the other. Each time it reads the monotonic
clock, spawns the process, and polls `GET /readyz` on 127.0.0.1:ADMIN_PORT every POLL_MS
(a refused connection counts as not ready); the time of the first 200 minus the time before
the spawn is that start's figure. Then SIGTERM, and the next start once the process has
exited. Prints `RESULT` lines (median, min, max in ms); stops every process it started and
exits within the deadline whatever happens.
"""
import argparse
import signal
import socket
import statistics
import subprocess
import sys
import time


def readyz(port: int) -> int | None:
    """The status of one GET /readyz, or None when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = b""
            while b"\r\n" not in head:
                data = s.recv(4096)
                if not data:
                    return None
                head += data
    except OSError:
        return None
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--poll-ms", type=float, default=1.0)
    parser.add_argument("--log", required=True, help="the processes' output goes here")
    parser.add_argument("--deadline", type=float, default=60.0)
    args = parser.parse_args()
    end = time.monotonic() + args.deadline
    poll = args.poll_ms / 1000.0
    # A timeout's SIGTERM must still stop the keyward being measured.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))

    if readyz(args.admin_port) is not None:
        print(f"start_ready.py: something already answers on {args.admin_port}", file=sys.stderr)
        return 1
    figures = []
    with open(args.log, "ab") as log:
        for _ in range(args.runs):
            proc = None
            try:
                started = time.monotonic()
                proc = subprocess.Popen([args.bin, "--config", args.config],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
                tick = started
                while True:
                    if readyz(args.admin_port) == 200:
                        figures.append((time.monotonic() - started) * 1000.0)
                        break
                    if proc.poll() is not None:
                        print(f"start_ready.py: keyward exited with {proc.returncode} before "
                              f"it was ready (see {args.log})", file=sys.stderr)
                        return 1
                    if time.monotonic() > min(end, started + 10):
                        print("start_ready.py: keyward was not ready within 10 s",
                              file=sys.stderr)
                        return 1
                    tick += poll
                    delay = tick - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            finally:
                if proc is not None:
                    stop(proc)
    print(f"RESULT runs {len(figures)}")
    print(f"RESULT median_ms {statistics.median(figures):.2f}")
    print(f"RESULT min_ms {min(figures):.2f}")
    print(f"RESULT max_ms {max(figures):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
