"""What test_hostile.py drives keyward with: a small HTTP/1.1 backend, a keyward started from
target/debug with file secrets and chosen timeouts, a self-signed certificate, and raw
HTTP/1.1, TLS and h2 clients that misbehave on purpose.

    with Lab(tmp_path, bins) as lab:
        kw = lab.keyward(header_read_timeout="1s", idle_timeout="2s")
        sock = tcp(kw.ingress)            # say nothing
        assert wait_closed(sock, 3.0).closed

Nothing here prints a key: assertion messages name cases, numbers and statuses only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import selectors
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack

import pod as podlib

LOCAL = "127.0.0.1"
CLIENT_ID = "hostile"
CLIENT_SECRET = "mcp-client-hostile"
BIG_SIZE = 4 * 1024 * 1024
SSE_INTERVAL = 0.2
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# h2 frame types and flags (RFC 9113 section 6).
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, CONTINUATION = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x9
END_STREAM, END_HEADERS = 0x1, 0x4
PROTOCOL_ERROR = int(h2.errors.ErrorCodes.PROTOCOL_ERROR)

CLOSED_ERRORS = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, ssl.SSLError)


# ---------------------------------------------------------------------------------------------
# The backend


@dataclass(frozen=True)
class Seen:
    """One request the backend received: method, target and header names (lowercase)."""

    method: str
    target: str
    header_names: frozenset[str]
    client: str | None


class Backend:
    """An HTTP/1.1 server on 127.0.0.1:0 keyward forwards to.

    GET /json              200 {"ok":true}
    GET /sse?seconds=N     text/event-stream, `data: n\\n\\n` every 200 ms for N seconds, chunked
    GET /big               4 MiB of fixed pseudo-random bytes (Content-Length); `big_sha256`
    """

    def __init__(self):
        self.big = random.Random(20250202).randbytes(BIG_SIZE)
        self.big_sha256 = hashlib.sha256(self.big).hexdigest()
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args):
                pass

            def do_GET(self):  # noqa: N802 - http.server's naming
                backend._serve(self)

            do_POST = do_GET

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 1024  # 100 slow readers open 100 backend connections at once

        self.server = Server((LOCAL, 0), Handler)
        self.addr = f"{LOCAL}:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def targets(self) -> list[str]:
        with self._lock:
            return [s.target for s in self.seen]

    def header_names_seen(self) -> set[str]:
        with self._lock:
            return set().union(*(s.header_names for s in self.seen)) if self.seen else set()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        if length:
            handler.rfile.read(length)
        with self._lock:
            self.seen.append(
                Seen(
                    handler.command,
                    handler.path,
                    frozenset(n.lower() for n in handler.headers.keys()),
                    handler.headers.get("X-Keyward-Client"),
                )
            )
        url = urlsplit(handler.path)
        try:
            if url.path == "/json":
                self._send(handler, 200, "application/json", b'{"ok":true}')
            elif url.path == "/big":
                handler.send_response(200)
                handler.send_header("Content-Type", "application/octet-stream")
                handler.send_header("Content-Length", str(len(self.big)))
                handler.end_headers()
                view = memoryview(self.big)
                for offset in range(0, len(view), 65536):
                    handler.wfile.write(view[offset:offset + 65536])
            elif url.path == "/sse":
                seconds = float(parse_qs(url.query).get("seconds", ["6"])[0])
                handler.send_response(200)
                handler.send_header("Content-Type", "text/event-stream")
                handler.send_header("Cache-Control", "no-cache")
                handler.send_header("Transfer-Encoding", "chunked")
                handler.end_headers()
                for n in range(sse_count(seconds)):
                    if n:
                        time.sleep(SSE_INTERVAL)
                    event = f"data: {n}\n\n".encode()
                    handler.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                handler.wfile.write(b"0\r\n\r\n")
            else:
                self._send(handler, 404, "application/json", b'{"error":"not_found"}')
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    @staticmethod
    def _send(handler, status: int, content_type: str, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def sse_count(seconds: float) -> int:
    """How many events /sse?seconds=N sends."""
    return max(1, round(seconds / SSE_INTERVAL))


# ---------------------------------------------------------------------------------------------
# A self-signed certificate


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path

    def client_context(self, alpn: list[str] | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cert))
        if alpn:
            context.set_alpn_protocols(alpn)
        return context


def make_cert(directory: Path) -> Cert:
    """A self-signed P-256 certificate for localhost and 127.0.0.1: with `cryptography` when
    the venv has it, else with the openssl CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "tls.crt", directory / "tls.key"
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True, capture_output=True, timeout=60,
        )
        os.chmod(key, 0o600)
        return Cert(cert, key)
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOCAL))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    podlib._write_private(
        key,
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    )
    return Cert(cert, key)


# ---------------------------------------------------------------------------------------------
# keyward


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


def keyward_config(
    *, backend: str, secrets_dir: Path, ingress: dict, tls: Cert | None, tls_options: dict
) -> str:
    lines = [
        "# Written by tests/python/hostile_support.py: names and places, no secret values.",
        "[ingress]",
        'listen = "127.0.0.1:0"',
        f"backend = {_toml('http://' + backend)}",
        'shutdown_grace = "1s"',
    ]
    lines += [f"{name} = {_toml(value)}" for name, value in ingress.items()]
    if tls is not None:
        lines += ["", "[ingress.tls]", f"cert = {_toml(tls.cert)}", f"key = {_toml(tls.key)}"]
        lines += [f"{name} = {_toml(value)}" for name, value in tls_options.items()]
    lines += [
        "",
        "[[ingress.clients]]",
        f'id = "{CLIENT_ID}"',
        f'secret = "{CLIENT_SECRET}"',
        "",
        "[admin]",
        'listen = "127.0.0.1:0"',
        "",
        "[secrets]",
        'source = "file"',
        f"dir = {_toml(secrets_dir)}",
        'watch_interval = "1s"',
        "",
        "[telemetry]",
        'log_format = "json"',
        "",
    ]
    return "\n".join(lines)


@dataclass
class Keyward:
    child: podlib.Child
    host: str
    port: int
    admin: str
    tls: Cert | None

    @property
    def ingress(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.child.pid

    def alive(self) -> bool:
        return self.child.alive()

    def output(self) -> str:
        return self.child.output()

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc/<pid>/status")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def ingress_connections(self) -> int:
        """How many established connections to the ingress port keyward holds (has accepted:
        its own file descriptors, not the kernel's accept queue)."""
        inodes = set()
        fd_dir = f"/proc/{self.pid}/fd"
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                target = os.readlink(f"{fd_dir}/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        port = f"{self.port:04X}"
        count = 0
        with open("/proc/net/tcp") as table:
            next(table)
            for line in table:
                fields = line.split()
                # local_address, state (01 = ESTABLISHED), inode
                if fields[1].endswith(":" + port) and fields[3] == "01" and fields[9] in inodes:
                    count += 1
        return count

    def stop(self) -> None:
        self.child.terminate()
        self.child.reap(time.monotonic() + podlib.STOP_TIMEOUT)


class Lab:
    """One test's backend, its keywards and certificate; `close()` stops them all and checks
    that no form of the client key reached keyward's output or the backend."""

    def __init__(self, directory: Path, bins: Path | None = None):
        self.dir = directory
        self.bins = bins or podlib.bin_dir()
        self.key = podlib.new_key()
        self.secrets_dir = directory / "secrets"
        podlib._private_dir(self.secrets_dir)
        podlib._write_private(self.secrets_dir / CLIENT_SECRET, self.key + "\n")
        self.backend = Backend()
        self.keywards: list[Keyward] = []
        self._cert: Cert | None = None

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def cert(self) -> Cert:
        if self._cert is None:
            self._cert = make_cert(self.dir / "tls")
        return self._cert

    def keyward(self, *, tls: bool = False, tls_options: dict | None = None, **ingress) -> Keyward:
        """Starts keyward in front of the backend with `[ingress]` keys `ingress` (and
        `[ingress.tls]` keys `tls_options` when `tls`), waits until it is ready."""
        binary = self.bins / "keyward"
        if not os.access(binary, os.X_OK):
            raise AssertionError(f"{binary} is missing: build keyward first")
        index = len(self.keywards)
        config = self.dir / f"keyward-{index}.toml"
        cert = self.cert if tls else None
        config.write_text(
            keyward_config(
                backend=self.backend.addr, secrets_dir=self.secrets_dir, ingress=ingress,
                tls=cert, tls_options=tls_options or {},
            )
        )
        child = podlib.Child(
            "keyward", [str(binary), "--config", str(config)], self.dir / f"keyward-{index}.log",
            podlib._child_env(),
        )
        try:
            listening = child.wait_line(podlib._log_event("keyward listening"), 20)
        except podlib.PodError:
            child.terminate()
            child.reap(time.monotonic() + 5)
            raise
        host, port = listening["ingress"].rsplit(":", 1)
        kw = Keyward(child, host, int(port), listening["admin"], cert)
        self.keywards.append(kw)
        self._wait_ready(kw)
        return kw

    @staticmethod
    def _wait_ready(kw: Keyward, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{kw.admin}/readyz", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}"
            except OSError as err:
                last = str(err)
            if not kw.alive():
                raise AssertionError(f"keyward exited before it was ready:\n{tail(kw.output())}")
            time.sleep(0.05)
        raise AssertionError(f"keyward /readyz not ready after {timeout:.0f}s ({last})")

    def secret_forms(self) -> list[str]:
        return podlib.secret_forms(self.key)

    def close(self) -> None:
        problems = []
        for i, kw in enumerate(self.keywards):
            if not kw.alive():
                problems.append(
                    f"keyward #{i} exited during the test (status {kw.child.proc.returncode}):\n"
                    f"{tail(kw.output())}"
                )
            kw.stop()
        self.backend.stop()
        forms = self.secret_forms()
        assert len(forms) >= 4, "the key's forms were not all computed"
        for i, kw in enumerate(self.keywards):
            if any(form in kw.output() for form in forms):
                problems.append(f"a form of the client key appears in keyward #{i}'s stdout/stderr")
        leaked = self.backend.header_names_seen() & {"x-api-key", "authorization"}
        if leaked:
            problems.append(f"the backend received client credential headers: {sorted(leaked)}")
        if problems:
            raise AssertionError("\n".join(problems))


def tail(text: str, lines: int = 15) -> str:
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def raise_nofile(wanted: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        raise AssertionError(f"RLIMIT_NOFILE hard limit {hard} is below the {wanted} needed")


# ---------------------------------------------------------------------------------------------
# Sockets


def tcp(addr: tuple[str, int], *, rcvbuf: int | None = None, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(addr)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def tls(addr: tuple[str, int], cert: Cert, alpn: list[str] | None, timeout: float = 5.0) -> ssl.SSLSocket:
    """A TLS connection with the handshake done, offering `alpn`."""
    sock = tcp(addr, timeout=timeout)
    try:
        return cert.client_context(alpn).wrap_socket(sock, server_hostname="localhost")
    except BaseException:
        sock.close()
        raise


def connect(kw: Keyward, alpn: list[str] | None = None) -> socket.socket:
    """Plain TCP to a plain keyward, TLS (with `alpn`) to a TLS one."""
    return tls(kw.ingress, kw.tls, alpn) if kw.tls else tcp(kw.ingress)


@dataclass
class Closed:
    """How a wait for the peer to close ended."""

    closed: bool
    after: float  # seconds from `since` to the close (or to giving up)
    data: bytes = b""
    how: str = ""

    def describe(self) -> str:
        return f"closed after {self.after:.2f}s ({self.how})" if self.closed else (
            f"still open after {self.after:.2f}s"
        )


def wait_closed(sock: socket.socket, within: float, since: float | None = None) -> Closed:
    """Reads (and keeps) whatever arrives until the peer closes or `within` seconds from
    `since` (default: now) have passed."""
    since = time.monotonic() if since is None else since
    deadline = since + within
    received = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return Closed(False, time.monotonic() - since, bytes(received))
        sock.settimeout(min(left, 0.25))
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        except CLOSED_ERRORS as err:
            return Closed(True, time.monotonic() - since, bytes(received), type(err).__name__)
        if not chunk:
            return Closed(True, time.monotonic() - since, bytes(received), "EOF")
        received += chunk


# ---------------------------------------------------------------------------------------------
# HTTP/1.1 by hand


class PeerClosed(Exception):
    """The peer closed before a whole response arrived."""


def h1_request(
    target: str,
    *,
    host: str | list[str] | None,
    key: str | None,
    method: str = "GET",
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """An HTTP/1.1 request head: `host` None (no Host), a string, or several Host lines."""
    lines = [f"{method} {target} HTTP/1.1"]
    hosts = [] if host is None else [host] if isinstance(host, str) else list(host)
    lines += [f"Host: {h}" for h in hosts]
    if key is not None:
        lines.append(f"X-Api-Key: {key}")
    lines += [f"{name}: {value}" for name, value in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class H1Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)


class H1Conn:
    """An HTTP/1.1 client connection on a socket, parsing responses by hand."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete response in time")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            raise TimeoutError("no complete response in time") from None
        except CLOSED_ERRORS as err:
            raise PeerClosed(type(err).__name__) from None
        if not chunk:
            raise PeerClosed("EOF")
        self.buf += chunk

    def _take(self, size: int, deadline: float) -> bytes:
        while len(self.buf) < size:
            self._fill(deadline)
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data

    def _line(self, deadline: float) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        at = self.buf.index(b"\r\n")
        line = bytes(self.buf[:at])
        del self.buf[:at + 2]
        return line

    def head(self, timeout: float = 5.0) -> tuple[int, list[tuple[str, str]]]:
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        at = self.buf.index(b"\r\n\r\n")
        head = bytes(self.buf[:at]).decode("latin-1").split("\r\n")
        del self.buf[:at + 4]
        version, status = head[0].split(" ", 2)[:2]
        if not version.startswith("HTTP/1."):
            raise AssertionError(f"not an HTTP/1.x status line: {head[0][:40]!r}")
        headers = []
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        return int(status), headers

    def chunks(self, headers: list[tuple[str, str]], timeout: float):
        """The body's pieces as they arrive: chunked, sized, or up to the close."""
        deadline = time.monotonic() + timeout
        values = {n.lower(): v for n, v in headers}
        if "chunked" in values.get("transfer-encoding", "").lower():
            while True:
                size = int(self._line(deadline).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self._line(deadline):
                        pass
                    return
                yield self._take(size, deadline)
                self._take(2, deadline)
        elif "content-length" in values:
            left = int(values["content-length"])
            while left:
                if not self.buf:
                    self._fill(deadline)
                piece = bytes(self.buf[:left])
                del self.buf[:len(piece)]
                left -= len(piece)
                yield piece
        else:
            while True:
                if self.buf:
                    piece = bytes(self.buf)
                    self.buf.clear()
                    yield piece
                try:
                    self._fill(deadline)
                except PeerClosed:
                    return

    def response(self, timeout: float = 5.0) -> H1Response:
        deadline = time.monotonic() + timeout
        status, headers = self.head(timeout)
        if status in (204, 304) or 100 <= status < 200:
            return H1Response(status, headers, b"")
        body = b"".join(self.chunks(headers, max(0.0, deadline - time.monotonic())))
        return H1Response(status, headers, body)


def h1_get(kw: Keyward, key: str | None, target: str = "/json", timeout: float = 5.0) -> H1Response:
    """One request on a fresh connection (TLS with ALPN http/1.1 to a TLS keyward)."""
    sock = connect(kw, ["http/1.1"])
    try:
        conn = H1Conn(sock)
        conn.send(h1_request(target, host=kw.authority, key=key))
        return conn.response(timeout)
    finally:
        sock.close()


# ---------------------------------------------------------------------------------------------
# h2 with the `h2` package


@dataclass
class H2Response:
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None  # RST_STREAM error code


class H2Conn:
    """An h2 client on a socket (h2c or TLS with ALPN h2). Frames are split here and fed to
    the `h2` package one by one, so a GOAWAY is seen even when more follows it; after a GOAWAY
    (or input the package refuses) PINGs are still answered by hand, so that a server's
    graceful shutdown (GOAWAY, PING, GOAWAY) can complete. Everything is kept: responses by
    stream, every GOAWAY's error code."""

    def __init__(self, sock: socket.socket, *, validate_outbound: bool = True):
        self.sock = sock
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding="latin-1",
            validate_outbound_headers=validate_outbound,
            normalize_outbound_headers=validate_outbound,
        )
        self.conn = h2.connection.H2Connection(config)
        self.streams: dict[int, H2Response] = {}
        self.goaways: list[int] = []  # error codes, in order
        self.done = False  # a GOAWAY came, or the h2 package refused input: no more requests
        self.closed = False
        self.close_how = ""
        self.pings_answered = 0
        self._raw = bytearray()
        self.conn.initiate_connection()
        self.flush()

    @property
    def goaway(self) -> int | None:
        """The last GOAWAY's error code, or None."""
        return self.goaways[-1] if self.goaways else None

    def _send(self, data: bytes) -> None:
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except CLOSED_ERRORS as err:
                self._closed(type(err).__name__)

    def flush(self) -> None:
        self._send(self.conn.data_to_send())

    def _closed(self, how: str) -> None:
        self.closed, self.close_how = True, how

    def request(
        self,
        path: str,
        key: str | None,
        *,
        authority: str,
        scheme: str = "http",
        method: str = "GET",
        extra: tuple[tuple[str, str], ...] = (),
        end_stream: bool = True,
        flush: bool = True,
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":scheme", scheme), (":authority", authority), (":path", path)]
        if key is not None:
            headers.append(("x-api-key", key))
        headers += list(extra)
        self.streams[sid] = H2Response()
        self.conn.send_headers(sid, headers, end_stream=end_stream)
        if flush:
            self.flush()
        return sid

    def pump(self, timeout: float) -> None:
        """Reads once (waiting up to `timeout`) and handles every whole frame that came."""
        if self.closed:
            return
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return
        except CLOSED_ERRORS as err:
            self._closed(type(err).__name__)
            return
        if not data:
            self._closed("EOF")
            return
        self._raw += data
        while len(self._raw) >= 9:
            end = 9 + int.from_bytes(self._raw[:3], "big")
            if len(self._raw) < end:
                break
            whole = bytes(self._raw[:end])
            del self._raw[:end]
            kind, flags = whole[3], whole[4]
            if kind == GOAWAY and len(whole) >= 17:
                self.goaways.append(int.from_bytes(whole[13:17], "big"))
            if self.done:
                if kind == PING and not flags & 0x1:
                    self._send(frame(PING, 0x1, 0, whole[9:]))
                    self.pings_answered += 1
                continue
            try:
                events = self.conn.receive_data(whole)
            except h2.exceptions.ProtocolError:
                self.done = True
                continue
            for event in events:
                self._handle(event)
            self.flush()

    def _handle(self, event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            response = self.streams.setdefault(event.stream_id, H2Response())
            response.headers = [(n, v) for n, v in event.headers]
            response.status = int(dict(response.headers)[":status"])
        elif isinstance(event, h2.events.DataReceived):
            response = self.streams.setdefault(event.stream_id, H2Response())
            response.body += event.data
            if event.flow_controlled_length:
                with contextlib.suppress(h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.streams.setdefault(event.stream_id, H2Response()).ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.streams.setdefault(event.stream_id, H2Response()).reset = int(event.error_code)
        elif isinstance(event, h2.events.PingReceived):
            self.pings_answered += 1  # the h2 package queued the ACK
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.done = True

    def response(self, sid: int, timeout: float = 5.0) -> H2Response:
        """Pumps until stream `sid` ended or was reset, the connection ended, or `timeout`."""
        deadline = time.monotonic() + timeout
        response = self.streams[sid]
        while not (response.ended or response.reset is not None or self.closed):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.pump(min(left, 0.25))
        return response

    def wait_closed(self, within: float, since: float | None = None, tick=None) -> Closed:
        """Pumps (answering PINGs) until the peer closes or `within` seconds from `since`;
        `tick()` runs between reads while no GOAWAY has come (to send something now and
        then)."""
        since = time.monotonic() if since is None else since
        deadline = since + within
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return Closed(False, time.monotonic() - since)
            if tick is not None and not self.done:
                tick()
                if self.closed:
                    break
            self.pump(min(left, 0.05 if tick else 0.25))
        return Closed(True, time.monotonic() - since, b"", self.close_how)

    def goaway_text(self) -> str:
        if not self.goaways:
            return "no GOAWAY"
        names = []
        for code in self.goaways:
            try:
                names.append(h2.errors.ErrorCodes(code).name)
            except ValueError:
                names.append(str(code))
        return "GOAWAY " + ", ".join(names)


# ---------------------------------------------------------------------------------------------
# h2 frames by hand


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def parse_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream, payload) of every whole frame in `data`."""
    frames, at = [], 0
    while at + 9 <= len(data):
        length = int.from_bytes(data[at:at + 3], "big")
        kind, flags = data[at + 3], data[at + 4]
        stream = int.from_bytes(data[at + 5:at + 9], "big") & 0x7FFFFFFF
        if at + 9 + length > len(data):
            break
        frames.append((kind, flags, stream, data[at + 9:at + 9 + length]))
        at += 9 + length
    return frames


def goaway_codes(data: bytes) -> list[int]:
    return [int.from_bytes(p[4:8], "big") for kind, _, _, p in parse_frames(data) if kind == GOAWAY and len(p) >= 8]


def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal_header(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    return b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


def request_block(authority: str, path: str, key: str) -> bytes:
    return hpack.Encoder().encode(
        [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path),
         ("x-api-key", key)],
        huffman=False,
    )


# ---------------------------------------------------------------------------------------------
# Many silent sockets


def open_silent(addr: tuple[str, int], count: int, within: float) -> list[socket.socket]:
    """`count` connections to `addr` that send nothing, connected in parallel (non-blocking),
    all established within `within` seconds or AssertionError."""
    selector = selectors.DefaultSelector()
    pending, done = {}, []
    deadline = time.monotonic() + within
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex(addr)
            if err not in (0, 115):  # EINPROGRESS
                sock.close()
                raise AssertionError(f"connect failed: {os.strerror(err)}")
            pending[sock.fileno()] = sock
            selector.register(sock, selectors.EVENT_WRITE)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{len(pending)} of {count} connections not established in {within}s")
            for key, _ in selector.select(min(left, 0.5)):
                sock = key.fileobj
                selector.unregister(sock)
                pending.pop(sock.fileno())
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    sock.close()
                    raise AssertionError(f"connect failed: {os.strerror(err)}")
                done.append(sock)
        return done
    except BaseException:
        for sock in list(pending.values()) + done:
            sock.close()
        raise
    finally:
        selector.close()


def wait_all_closed(socks: list[socket.socket], within: float) -> int:
    """Waits up to `within` seconds for the peer to close each of `socks`; returns how many are
    still open."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    open_count = len(socks)
    deadline = time.monotonic() + within
    try:
        while open_count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in selector.select(min(left, 0.5)):
                sock = key.fileobj
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    open_count -= 1
        return open_count
    finally:
        selector.close()
