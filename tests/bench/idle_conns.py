#!/usr/bin/env python3
"""Memory held by idle keep-alive connections (Python stdlib only).

Reads the summed VmRSS of the given processes, opens N connections to 127.0.0.1:PORT, sends
one authenticated GET on each (in batches, so the proxy's own upstream pool stays small) and
reads its response, then leaves every connection open and idle, waits for the allocator to
settle, and reads VmRSS again. Prints `RESULT` lines; closes everything and exits within the
deadline whatever happens.
"""
import argparse
import resource
import selectors
import socket
import sys
import time


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def read_response(sock: socket.socket) -> bool:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(4096)
        if not data:
            return False
        buf += data
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    if b" 200 " not in lines[0] + b" ":
        return False
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        data = sock.recv(4096)
        if not data:
            return False
        body += data
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pids", required=True, help="comma-separated pids whose RSS to sum")
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--key", default="")
    parser.add_argument("--settle", type=float, default=1.5)
    parser.add_argument("--deadline", type=float, default=60.0)
    args = parser.parse_args()
    pids = [int(p) for p in args.pids.split(",") if p]
    end = time.monotonic() + args.deadline

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.count + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    request = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: {args.key}\r\n\r\n"
    ).encode()
    before = rss_kib(pids)
    socks = []
    failed = 0
    started = time.monotonic()
    try:
        while len(socks) < args.count and time.monotonic() < end:
            batch = []
            for _ in range(min(args.batch, args.count - len(socks))):
                s = socket.create_connection(("127.0.0.1", args.port), timeout=10)
                s.sendall(request)
                batch.append(s)
            for s in batch:
                if not read_response(s):
                    failed += 1
            socks.extend(batch)
        opened_in = time.monotonic() - started
        time.sleep(args.settle)
        after = rss_kib(pids)
        # A readable idle socket means the peer closed it (or sent something unasked).
        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        closed = len(sel.select(timeout=0))
        sel.close()
        print(f"RESULT connections {len(socks)}")
        print(f"RESULT failed {failed}")
        print(f"RESULT closed_by_peer {closed}")
        print(f"RESULT open_seconds {opened_in:.2f}")
        print(f"RESULT rss_before_kib {before}")
        print(f"RESULT rss_after_kib {after}")
        if socks:
            print(f"RESULT per_conn_kib {(after - before) / len(socks):.2f}")
    finally:
        for s in socks:
            s.close()
    return 0 if failed == 0 and len(socks) == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
