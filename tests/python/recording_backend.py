"""A recording HTTP hop on 127.0.0.1:0 for keyward's ingress to forward to.

It records every request's method, path, headers (names and values, in order, repeats
kept) and body, then forwards the request to `target` (the real mcp-backend) and returns its
answer, so a whole MCP session works through it. Without a target it answers 200 `{"recorded": true}`.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "content-length", "host",
}


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def names(self) -> set[str]:
        return {n.lower() for n, _ in self.headers}


class RecordingBackend:
    def __init__(self, target: str | None = None):
        self.target = target
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args):  # quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self):
                body = self._body()
                with recorder._lock:
                    recorder.requests.append(
                        Recorded(self.command, self.path, list(self.headers.items()), body)
                    )
                if recorder.target is None:
                    self._reply(200, [("Content-Type", "application/json")], b'{"recorded":true}')
                    return
                upstream = http.client.HTTPConnection(recorder.target, timeout=30)
                try:
                    headers = {}
                    for name, value in self.headers.items():
                        if name.lower() not in HOP_BY_HOP:
                            headers[name] = value
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    data = reply.read()
                    kept = [(n, v) for n, v in reply.getheaders() if n.lower() not in HOP_BY_HOP]
                    self._reply(reply.status, kept, data)
                finally:
                    upstream.close()

            def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes):
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.addr = "127.0.0.1:%d" % self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def snapshot(self) -> list[Recorded]:
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RecordingBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
