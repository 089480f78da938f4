#!/usr/bin/env python3
"""SSE emitter and client for the per-event latency figure (Python stdlib only).

serve: an HTTP/1.1 server (keep-alive, chunked) whose every request (GET, or POST with a
body, which it reads and ignores) answers a text/event-stream of N events, one every MS
milliseconds; each event carries the CLOCK_MONOTONIC time at which it was written
(`data: <seq> <ns>`, or with `json=1` a JSON-RPC notification whose `message` is `<seq> <ns>`,
as an MCP server's progress events would be).
client: reads one stream (optionally through a proxy) and prints, as `RESULT` lines, the
median, p90 and p99 of receive time minus emit time, in microseconds. Emitter and client
run on the same host, so CLOCK_MONOTONIC is shared. `--post BODY` sends the request as an MCP
client's POST of BODY (a JSON-RPC request) instead of a GET; `--json` asks for JSON events.
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
            buf = skip_body(conn, head, buf)
            if buf is None:
                return
            target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
            query = parse_qs(urlsplit(target).query)
            count = int(query.get("n", ["100"])[0])
            interval = float(query.get("ms", ["5"])[0]) / 1000.0
            json_events = query.get("json", ["0"])[0] == "1"
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            start = time.monotonic()
            for seq in range(count):
                delay = start + seq * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if json_events:
                    event = (
                        f'id: {seq}\ndata: {{"jsonrpc":"2.0","method":"notifications/progress",'
                        f'"params":{{"progressToken":"bench","progress":{seq},'
                        f'"message":"{seq} {time.monotonic_ns()}"}}}}\n\n'
                    ).encode()
                else:
                    event = f"id: {seq}\ndata: {seq} {time.monotonic_ns()}\n\n".encode()
                conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
            conn.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    finally:
        conn.close()


def skip_body(conn: socket.socket, head: bytes, buf: bytes) -> bytes | None:
    """Reads past a request body (Content-Length or chunked); what follows it, None at EOF."""
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip().lower()
    if fields.get(b"transfer-encoding") == b"chunked":
        end = b"0\r\n\r\n"  # the bench's bodies carry no trailers
        while end not in buf:
            data = conn.recv(65536)
            if not data:
                return None
            buf += data
        return buf.split(end, 1)[1]
    length = int(fields.get(b"content-length", b"0"))
    while len(buf) < length:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    return buf[length:]


EVENT = re.compile(rb"data: (\d+) (\d+)\n\n")
JSON_EVENT = re.compile(rb'data: \{[^\n]*"message":"(\d+) (\d+)"\}\}\n\n')


def client(port: int, path: str, key: str, count: int, ms: float, deadline: float,
           post: str | None = None, json_events: bool = False) -> int:
    sock = socket.create_connection(("127.0.0.1", port), timeout=deadline)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    target = f"{path}?n={count}&ms={ms}{'&json=1' if json_events else ''}"
    if post is None:
        request = (
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"X-Api-Key: {key}\r\nAccept: text/event-stream\r\n\r\n"
        )
    else:
        body = post.encode()
        request = (
            f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: {key}\r\n"
            f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ) + post
    pattern = JSON_EVENT if json_events else EVENT
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
        for match in pattern.finditer(buf, pos):
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
    c.add_argument("--post", metavar="BODY", help="POST this JSON-RPC body instead of a GET")
    c.add_argument("--json", action="store_true", help="ask for JSON-RPC notification events")
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args.port)
        return 0
    return client(args.port, args.path, args.key, args.events, args.ms, args.deadline,
                  args.post, args.json)


if __name__ == "__main__":
    sys.exit(main())
