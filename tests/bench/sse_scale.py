#!/usr/bin/env python3
"""SSE streams at scale: memory per open stream and latency per event (Python stdlib only).

serve: one thread, one epoll loop, any number of streams. `GET /sse/idle` answers the head of
a text/event-stream (chunked) and then nothing until the peer closes; `GET /sse/active?ms=M`
answers an event every M milliseconds until the peer closes, each carrying the
CLOCK_MONOTONIC time it was written at (`data: <seq> <ns>`), its first at a random offset
within M so that many streams' events spread over the interval instead of leaving together.

client: through a proxy (--port) with the emitter also reachable directly (--direct-port),
for each count N of --counts (ascending): opens idle streams through the proxy until N minus
--active are open (in batches, each answered 200 before the next batch), then --active streams
through the proxy, with all N open reads their events for --seconds (after a short warm-up)
and the summed VmRSS of --pids, closes those, then opens --active streams straight to the
emitter (the N minus --active idle ones through the proxy still open) and reads theirs for as
long. The idle streams stay open for the next, larger N. Prints `RESULT <N>.<name> <value>`
lines: the proxy's RSS before any stream and with N open, the cost per stream, the p50 and
p99 of receive time minus emit time through the proxy and direct, and the difference.
Emitter and client run on the same host, so CLOCK_MONOTONIC is shared. Closes everything and
exits within the deadline whatever happens.
"""
import argparse
import heapq
import random
import resource
import selectors
import socket
import statistics
import sys
import time
from urllib.parse import parse_qs, urlsplit

from idle_conns import rss_kib  # beside this script: the summed VmRSS of the pids

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


# --- emitter -----------------------------------------------------------------------------


class Stream:
    """One emitter connection: its request so far, what is left to send, its schedule."""

    __slots__ = ("sock", "inbuf", "out", "interval", "seq", "alive", "head_done", "writing")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = b""
        self.out = bytearray()
        self.interval = 0.0
        self.seq = 0
        self.alive = True
        self.head_done = False
        self.writing = False  # registered for EVENT_WRITE: the socket's buffer was full


def serve(port: int) -> None:
    raise_nofile(1 << 20)
    listener = socket.create_server(("127.0.0.1", port), backlog=4096)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    timers: list[tuple[float, int, Stream]] = []  # (due, tie-breaker, stream)
    tie = 0
    print(f"sse scale emitter on 127.0.0.1:{port}", flush=True)

    def close(stream: Stream) -> None:
        if stream.alive:
            stream.alive = False
            sel.unregister(stream.sock)
            stream.sock.close()

    def flush(stream: Stream) -> None:
        try:
            sent = stream.sock.send(stream.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            close(stream)
            return
        del stream.out[:sent]
        if bool(stream.out) != stream.writing:
            stream.writing = bool(stream.out)
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if stream.writing else 0)
            sel.modify(stream.sock, want, stream)

    while True:
        timeout = None
        if timers:
            timeout = max(0.0, timers[0][0] - time.monotonic())
        for key, events in sel.select(timeout):
            if key.data is None:
                while True:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    stream = Stream(conn)
                    sel.register(conn, selectors.EVENT_READ, stream)
                continue
            stream = key.data
            if events & selectors.EVENT_WRITE:
                flush(stream)
                if not stream.alive:
                    continue
            if not events & selectors.EVENT_READ:
                continue
            try:
                data = stream.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                close(stream)
                continue
            if stream.head_done:
                continue  # nothing more is expected on a stream; ignore it
            stream.inbuf += data
            if b"\r\n\r\n" not in stream.inbuf:
                continue
            stream.head_done = True
            target = stream.inbuf.split(b"\r\n", 1)[0].split(b" ")[1].decode()
            stream.inbuf = b""
            url = urlsplit(target)
            stream.out += HEAD
            if url.path == "/sse/active":
                stream.interval = float(parse_qs(url.query).get("ms", ["10"])[0]) / 1000.0
                tie += 1
                due = time.monotonic() + random.random() * stream.interval
                heapq.heappush(timers, (due, tie, stream))
            flush(stream)
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            due, _, stream = heapq.heappop(timers)
            if not stream.alive:
                continue
            event = f"id: {stream.seq}\ndata: {stream.seq} {time.monotonic_ns()}\n\n".encode()
            stream.seq += 1
            stream.out += b"%x\r\n%s\r\n" % (len(event), event)
            flush(stream)
            if stream.alive:
                tie += 1
                heapq.heappush(timers, (due + stream.interval, tie, stream))


# --- client ------------------------------------------------------------------------------


def request(path: str, key: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: {key}\r\n"
        f"Accept: text/event-stream\r\n\r\n"
    ).encode()


def read_head(sock: socket.socket) -> bytes | None:
    """The response head and whatever body bytes came with it; None unless a 200."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    if b" 200 " not in head.split(b"\r\n", 1)[0] + b" ":
        return None
    return rest


class Reader:
    """One active stream's chunked body, decoded as it arrives, and the events in it."""

    __slots__ = ("raw", "body", "size")

    def __init__(self) -> None:
        self.raw = bytearray()
        self.body = bytearray()
        self.size = -1  # the current chunk's size still to read; -1: a size line is next

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        """Appends `data`; the (seq, emit ns) of every event it completed."""
        self.raw += data
        while True:
            if self.size < 0:
                end = self.raw.find(b"\r\n")
                if end < 0:
                    break
                self.size = int(self.raw[:end].split(b";", 1)[0], 16)
                del self.raw[: end + 2]
                if self.size == 0:
                    raise EOFError("the stream ended")
            if len(self.raw) < self.size + 2:
                take = min(self.size, len(self.raw))
                self.body += self.raw[:take]
                del self.raw[:take]
                self.size -= take
                break
            self.body += self.raw[: self.size]
            del self.raw[: self.size + 2]
            self.size = -1
        events = []
        while True:
            end = self.body.find(b"\n\n")
            if end < 0:
                break
            for line in bytes(self.body[:end]).split(b"\n"):
                if line.startswith(b"data: "):
                    seq, sent = line[6:].split(b" ")
                    events.append((int(seq), int(sent)))
            del self.body[: end + 2]
        return events


def open_streams(port: int, path: str, key: str, count: int, batch: int, end: float) -> list:
    """`count` streams of `path`, each answered 200; (socket, bytes after the head) pairs."""
    opened = []
    try:
        while len(opened) < count:
            if time.monotonic() > end:
                raise TimeoutError(f"opened {len(opened)} of {count} streams by the deadline")
            pending = []
            for _ in range(min(batch, count - len(opened))):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.sendall(request(path, key))
                pending.append(s)
            for s in pending:
                rest = read_head(s)
                if rest is None:
                    for t in pending:
                        t.close()
                    raise ConnectionError(f"a stream of {path} on port {port} was refused")
                opened.append((s, rest))
    except BaseException:
        for s, _ in opened:
            s.close()
        raise
    return opened


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def measure(port: int, key: str, active: int, ms: float, warm: float, seconds: float,
            end: float, at_end=None) -> dict:
    """Opens `active` event streams on `port`, reads them for `seconds` after `warm`;
    latencies in µs. `at_end` is called with every stream still open."""
    streams = open_streams(port, f"/sse/active?ms={ms}", key, active, active, end)
    sel = selectors.DefaultSelector()
    readers = {}
    try:
        for s, rest in streams:
            s.setblocking(False)
            readers[s] = Reader()
            # Bytes that came with the head: fed now, within the warm-up, so never counted.
            readers[s].feed(rest)
            sel.register(s, selectors.EVENT_READ, s)
        measure_from = time.monotonic() + warm
        stop = measure_from + seconds
        latencies = []
        while True:
            now = time.monotonic()
            if now >= stop:
                break
            if now > end:
                raise TimeoutError("the deadline passed while reading events")
            for key_, _ in sel.select(stop - now):
                s = key_.data
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                received = time.monotonic_ns()
                if not data:
                    raise ConnectionError("an active stream was closed by the peer")
                events = readers[s].feed(data)
                if time.monotonic() >= measure_from:
                    latencies.extend((received - sent) / 1000.0 for _, sent in events)
        extra = at_end() if at_end else {}
    finally:
        sel.close()
        for s, _ in streams:
            s.close()
    if len(latencies) < 100:
        raise RuntimeError(f"too few events: {len(latencies)}")
    out = {
        "events": len(latencies),
        "p50_us": statistics.median(latencies),
        "p99_us": pct(latencies, 99),
    }
    out.update(extra)
    return out


def closed_by_peer(socks: list[socket.socket]) -> int:
    """How many idle streams have something to read: the peer closed them (or sent data)."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    closed = len(sel.select(timeout=0))
    sel.close()
    for s in socks:
        s.setblocking(True)
    return closed


def client(args) -> int:
    counts = sorted(int(c) for c in args.counts.split(",") if c)
    pids = [int(p) for p in args.pids.split(",") if p]
    raise_nofile(max(counts) + args.active + 1024)
    end = time.monotonic() + args.deadline
    rss_idle = rss_kib(pids)
    idle: list[socket.socket] = []
    try:
        for n in counts:
            if n <= args.active:
                raise ValueError(f"--counts {n} must exceed --active {args.active}")
            started = time.monotonic()
            for s, _ in open_streams(args.port, "/sse/idle", args.key, n - args.active - len(idle),
                                     args.batch, end):
                idle.append(s)
            opened_in = time.monotonic() - started
            time.sleep(args.settle)  # let the proxy's allocator settle before RSS is read

            def with_all_open():
                return {"rss_kib": rss_kib(pids), "closed_by_peer": closed_by_peer(idle)}

            proxied = measure(args.port, args.key, args.active, args.ms, args.warm,
                              args.seconds, end, with_all_open)
            direct = measure(args.direct_port, args.key, args.active, args.ms, args.warm,
                             args.seconds, end)
            lines = {
                "streams": n,
                "active": args.active,
                "event_ms": args.ms,
                "open_seconds": round(opened_in, 2),
                "rss_idle_kib": rss_idle,
                "rss_kib": proxied["rss_kib"],
                "per_stream_kib": round((proxied["rss_kib"] - rss_idle) / n, 2),
                "closed_by_peer": proxied["closed_by_peer"],
                "events": proxied["events"],
                "proxy_p50_us": round(proxied["p50_us"], 1),
                "proxy_p99_us": round(proxied["p99_us"], 1),
                "direct_events": direct["events"],
                "direct_p50_us": round(direct["p50_us"], 1),
                "direct_p99_us": round(direct["p99_us"], 1),
                "added_p50_us": round(proxied["p50_us"] - direct["p50_us"], 1),
                "added_p99_us": round(proxied["p99_us"] - direct["p99_us"], 1),
            }
            for name, value in lines.items():
                print(f"RESULT {n}.{name} {value}", flush=True)
    finally:
        for s in idle:
            s.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    c = sub.add_parser("client")
    c.add_argument("--port", type=int, required=True, help="the proxy")
    c.add_argument("--direct-port", type=int, required=True, help="the emitter itself")
    c.add_argument("--pids", required=True, help="comma-separated pids whose RSS to sum")
    c.add_argument("--counts", default="1000,10000", help="comma-separated stream counts")
    c.add_argument("--active", type=int, default=100, help="streams with events flowing")
    c.add_argument("--ms", type=float, default=10.0, help="interval between a stream's events")
    c.add_argument("--seconds", type=float, default=5.0, help="time events are read for")
    c.add_argument("--warm", type=float, default=0.5, help="events not counted, at first")
    c.add_argument("--batch", type=int, default=200)
    c.add_argument("--key", default="")
    c.add_argument("--settle", type=float, default=1.0)
    c.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args.port)
        return 0
    try:
        return client(args)
    except (OSError, ValueError, RuntimeError, EOFError) as e:
        print(f"sse_scale.py: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
