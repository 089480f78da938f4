#!/usr/bin/env python3
"""SSE emitter and client for the per-event latency figure (Python stdlib only).

serve: an HTTP/1.1 server (keep-alive, chunked) whose every GET answers a text/event-stream
of N events, one every MS milliseconds; each event carries the CLOCK_MONOTONIC time at which
it was written (`data: <seq> <ns>`).
client: reads one stream (optionally through a proxy) and prints, as `RESULT` lines, the
median, p90 and p99 of receive time minus emit time, in microseconds. Emitter and client
run on the same host, so CLOCK_MONOTONIC is shared.
"""
import argparse
import re
import socket
import statistics
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit


def serve(port: int) -> None:
    listener = socket.create_server(("127.0.0.1", port), backlog=128, reuse_port=False)
    print(f"sse emitter on 127.0.0.1:{port}", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def handle(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
            query = parse_qs(urlsplit(target).query)
            count = int(query.get("n", ["100"])[0])
            interval = float(query.get("ms", ["5"])[0]) / 1000.0
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            start = time.monotonic()
            for seq in range(count):
                delay = start + seq * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                event = f"id: {seq}\ndata: {seq} {time.monotonic_ns()}\n\n".encode()
                conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
            conn.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    finally:
        conn.close()


EVENT = re.compile(rb"data: (\d+) (\d+)\n\n")


def client(port: int, path: str, key: str, count: int, ms: float, deadline: float) -> int:
    sock = socket.create_connection(("127.0.0.1", port), timeout=deadline)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = (
        f"GET {path}?n={count}&ms={ms} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-Api-Key: {key}\r\nAccept: text/event-stream\r\n\r\n"
    )
    sock.sendall(request.encode())
    buf = b""
    pos = 0
    latencies = []
    seen = 0
    status = None
    end = time.monotonic() + deadline
    while seen < count and time.monotonic() < end:
        data = sock.recv(65536)
        now = time.monotonic_ns()
        if not data:
            break
        buf += data
        if status is None and b"\r\n" in buf:
            status = buf.split(b"\r\n", 1)[0].decode(errors="replace")
            if " 200 " not in status + " ":
                print(f"unexpected status: {status}", file=sys.stderr)
                return 1
        for match in EVENT.finditer(buf, pos):
            seq, sent = int(match.group(1)), int(match.group(2))
            # The first events also measure connection setup; skip a short warm-up.
            if seq >= 5:
                latencies.append((now - sent) / 1000.0)
            seen += 1
            pos = match.end()
    sock.close()
    if len(latencies) < 10:
        print(f"too few events received: {seen}", file=sys.stderr)
        return 1
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(round(p / 100.0 * (len(latencies) - 1))))]

    print(f"RESULT events {seen}")
    print(f"RESULT median_us {statistics.median(latencies):.1f}")
    print(f"RESULT p90_us {pct(90):.1f}")
    print(f"RESULT p99_us {pct(99):.1f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    c = sub.add_parser("client")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--path", default="/sse/stream")
    c.add_argument("--key", default="")
    c.add_argument("--events", type=int, default=400)
    c.add_argument("--ms", type=float, default=5.0)
    c.add_argument("--deadline", type=float, default=30.0)
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args.port)
        return 0
    return client(args.port, args.path, args.key, args.events, args.ms, args.deadline)


if __name__ == "__main__":
    sys.exit(main())
