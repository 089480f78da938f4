"""Hostile clients against keyward's ingress, black-box: the real binary in front of a small
backend started here, driven over raw sockets, TLS and h2 frames.

What keyward promises a client that misbehaves (the `[ingress]` keys in the README):
  - header_read_timeout counts from accept (after the TLS handshake): a connection that says
    nothing is closed after it;
  - tls.handshake_timeout: a TLS handshake not finished in time is closed;
  - idle_timeout: a connection with no request in flight is closed (h2: GOAWAY, then close);
  - unauthenticated_timeout: a connection without one authenticated request is closed however
    busy it keeps itself (401s, PINGs, SETTINGS);
  - a request in flight (a long SSE stream) is never cut by any of these;
  - the negotiated ALPN protocol is the only one spoken; Host is checked (RFC 9112 3.2, RFC 9113
    8.3.1); h2 floods end the flooding connection and nothing else; a client that does not
    read costs keyward a bounded amount of memory.

Every test starts its own keyward with small timeouts; every bound has SLACK seconds of slack.
No test prints the client key; the Lab checks at teardown that keyward's output never held it.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import h2.errors
import h2.exceptions
import h2.settings
import pytest

from hostile_support import (
    CONTINUATION,
    END_STREAM,
    H2_PREFACE,
    HEADERS,
    PROTOCOL_ERROR,
    SETTINGS,
    BIG_SIZE,
    Closed,
    H1Conn,
    H2Conn,
    Lab,
    PeerClosed,
    connect,
    frame,
    goaway_codes,
    h1_get,
    h1_request,
    literal_header,
    open_silent,
    raise_nofile,
    request_block,
    sse_count,
    tcp,
    tls,
    wait_all_closed,
    wait_closed,
)

SLACK = 2.0  # seconds a close may come after its timeout
NOT_BEFORE = 0.5  # an idle close sooner than this after the last response is a failure
SSE_SECONDS = 6.0  # longer than every timeout below


@pytest.fixture()
def lab(bins, tmp_path):
    with Lab(tmp_path, bins) as running:
        yield running


def expect_closed(result, bound: float, what: str) -> None:
    assert result.closed, f"{what}: {result.describe()}, expected a close within {bound:.1f}s"
    assert result.after <= bound, f"{what}: {result.describe()}, expected within {bound:.1f}s"


# ---------------------------------------------------------------------------------------------
# 1-3. Connections that say nothing


def test_zero_byte_connection_is_closed_after_header_read_timeout(lab):
    kw = lab.keyward(header_read_timeout="1s", unauthenticated_timeout="5s", idle_timeout="5s")
    sock = tcp(kw.ingress)
    with sock:
        result = wait_closed(sock, 1 + SLACK + 1)
    expect_closed(result, 1 + SLACK, "a TCP connection that sent zero bytes")
    assert not result.data.startswith(b"HTTP/1.1 2"), "a connection that sent nothing got a 2xx"


def test_partial_request_head_is_closed_after_header_read_timeout(lab):
    """The slowloris case, as a control for the harness: part of a request line, then
    nothing."""
    kw = lab.keyward(header_read_timeout="1s", unauthenticated_timeout="5s", idle_timeout="5s")
    sock = tcp(kw.ingress)
    with sock:
        sock.sendall(b"GET /json HTTP/1.1\r\nHo")
        result = wait_closed(sock, 1 + SLACK + 1)
    expect_closed(result, 1 + SLACK, "a connection that sent part of a request head")


@pytest.mark.parametrize("alpn", ["h2", "http/1.1"])
def test_tls_handshake_then_silence_is_closed_after_header_read_timeout(lab, alpn):
    kw = lab.keyward(
        tls=True, tls_options={"handshake_timeout": "5s"},
        header_read_timeout="1s", unauthenticated_timeout="5s", idle_timeout="5s",
    )
    sock = tls(kw.ingress, kw.tls, [alpn])
    with sock:
        assert sock.selected_alpn_protocol() == alpn
        result = wait_closed(sock, 1 + SLACK + 1)
    expect_closed(result, 1 + SLACK, f"a TLS connection (ALPN {alpn}) that sent nothing after the handshake")


def test_tls_port_without_a_handshake_is_closed_after_handshake_timeout(lab):
    """handshake_timeout (1s) is shorter than header_read_timeout (5s): the close must come
    from the former."""
    kw = lab.keyward(
        tls=True, tls_options={"handshake_timeout": "1s"},
        header_read_timeout="5s", unauthenticated_timeout="5s", idle_timeout="5s",
    )
    sock = tcp(kw.ingress)
    with sock:
        result = wait_closed(sock, 1 + SLACK + 1)
    expect_closed(result, 1 + SLACK, "a TCP connection to the TLS port that never started a handshake")


def test_tls_handshake_stalled_midway_is_closed_after_handshake_timeout(lab):
    """A ClientHello's first bytes, then nothing: the handshake has begun and never ends."""
    kw = lab.keyward(
        tls=True, tls_options={"handshake_timeout": "1s"},
        header_read_timeout="5s", unauthenticated_timeout="5s", idle_timeout="5s",
    )
    sock = tcp(kw.ingress)
    with sock:
        sock.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03]))
        result = wait_closed(sock, 1 + SLACK + 1)
    expect_closed(result, 1 + SLACK, "a TLS handshake stalled after 11 bytes of ClientHello")


# ---------------------------------------------------------------------------------------------
# 4. Idle and unauthenticated h2 connections, and busy unauthenticated ones


def _h2(kw) -> tuple[H2Conn, socket.socket]:
    sock = connect(kw, ["h2"])
    if kw.tls:
        assert sock.selected_alpn_protocol() == "h2"
    return H2Conn(sock), sock


def _scheme(kw) -> str:
    return "https" if kw.tls else "http"


@pytest.mark.parametrize("first", ["idle_timeout", "unauthenticated_timeout"])
@pytest.mark.parametrize("transport", ["h2c", "h2-tls"])
def test_h2_connection_without_a_stream_gets_goaway(lab, transport, first):
    """Preface and SETTINGS, PINGs answered, no stream ever opened: whichever of idle_timeout
    and unauthenticated_timeout comes first (2s; the other 3s) ends it with a GOAWAY, then a
    close."""
    timeouts = {"idle_timeout": "3s", "unauthenticated_timeout": "3s", first: "2s"}
    kw = lab.keyward(
        tls=transport == "h2-tls", tls_options={"handshake_timeout": "5s"},
        header_read_timeout="5s", **timeouts,
    )
    client, sock = _h2(kw)
    with sock:
        result = client.wait_closed(2 + SLACK + 1)
    what = f"an idle {transport} connection that opened no stream ({first} first)"
    expect_closed(result, 2 + SLACK, what)
    assert client.goaway is not None, f"{what}: {result.describe()} without a GOAWAY"


@pytest.mark.parametrize("transport", ["h2c", "h2-tls"])
def test_authenticated_h2_connection_gets_goaway_after_idle_timeout(lab, transport):
    kw = lab.keyward(
        tls=transport == "h2-tls", tls_options={"handshake_timeout": "5s"},
        header_read_timeout="5s", unauthenticated_timeout="5s", idle_timeout="2s",
    )
    client, sock = _h2(kw)
    with sock:
        sid = client.request("/json", lab.key, authority=kw.authority, scheme=_scheme(kw))
        response = client.response(sid)
        assert (response.status, response.ended) == (200, True), f"{transport}: first request"
        idle_since = time.monotonic()
        early = client.wait_closed(NOT_BEFORE, since=idle_since)
        assert not early.closed, f"{transport}: {early.describe()} of idleness, before idle_timeout"
        result = client.wait_closed(2 + SLACK + 1, since=idle_since)
    expect_closed(result, 2 + SLACK, f"an authenticated {transport} connection left idle")
    assert client.goaway is not None, f"{transport}: closed without a GOAWAY ({result.how})"


@pytest.mark.parametrize(
    "case", ["h1-401s", "h1-401s-default-timeout", "h2-401s", "h2-pings-and-settings"]
)
def test_unauthenticated_connection_is_closed_however_busy(lab, case):
    """A connection that keeps itself busy without ever presenting a valid key: 401-earning
    requests every 300 ms (HTTP/1.1 or h2 streams), or h2 PINGs and SETTINGS. idle_timeout and
    header_read_timeout are long; only unauthenticated_timeout can end it. Its default is
    header_read_timeout (the `-default-timeout` case sets only that)."""
    limits = {"auth_failure_burst": 1000, "auth_failures_per_minute": 1000, "idle_timeout": "10s"}
    if case.endswith("default-timeout"):
        kw = lab.keyward(header_read_timeout="1s", **limits)
        timeout = 1
    else:
        kw = lab.keyward(header_read_timeout="5s", unauthenticated_timeout="2s", **limits)
        timeout = 2
    bound = timeout + SLACK

    if case.startswith("h1"):
        sock = tcp(kw.ingress)
        conn, statuses = H1Conn(sock), []
        since = time.monotonic()
        with sock:
            result = None
            while time.monotonic() < since + bound + 1:
                try:
                    conn.send(h1_request("/json", host=kw.authority, key="x" * len(lab.key)))
                    statuses.append(conn.response(timeout=2).status)
                except (PeerClosed, OSError) as err:
                    result = Closed(True, time.monotonic() - since, b"", type(err).__name__)
                    break
                time.sleep(0.3)
            if result is None:
                result = wait_closed(sock, 0.0, since)
        assert statuses and set(statuses) <= {401}, f"{case}: statuses {sorted(set(statuses))}"
        expect_closed(result, bound, f"{case}: a connection sending only wrong keys")
        return

    client, sock = _h2(kw)
    statuses: list[int] = []
    last = {"ping": 0.0, "settings": 0.0, "request": 0.0}
    streams: list[int] = []
    window = 65535

    def tick():
        nonlocal window
        now = time.monotonic()
        if now - last["ping"] >= 0.25:
            last["ping"] = now
            client.conn.ping(b"hostile!")
        if case == "h2-pings-and-settings" and now - last["settings"] >= 0.5:
            last["settings"] = now
            window = 65536 if window == 65535 else 65535
            client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        if case == "h2-401s" and now - last["request"] >= 0.3:
            last["request"] = now
            streams.append(
                client.request("/json", "x" * len(lab.key), authority=kw.authority, flush=False)
            )
        client.flush()

    with sock:
        since = time.monotonic()
        result = client.wait_closed(bound + 1, since=since, tick=tick)
    statuses = [client.streams[s].status for s in streams if client.streams[s].status]
    if case == "h2-401s":
        assert statuses and set(statuses) <= {401}, f"{case}: statuses {sorted(set(statuses))}"
    expect_closed(result, bound, f"{case}: an h2 connection that never authenticated")


# ---------------------------------------------------------------------------------------------
# 5. Idle HTTP/1.1 keep-alive


def test_authenticated_keepalive_connection_is_closed_after_idle_timeout(lab):
    """idle_timeout (2s) is shorter than header_read_timeout (5s): keep-alive idleness is
    idle_timeout's."""
    kw = lab.keyward(header_read_timeout="5s", unauthenticated_timeout="5s", idle_timeout="2s")
    sock = tcp(kw.ingress)
    with sock:
        conn = H1Conn(sock)
        conn.send(h1_request("/json", host=kw.authority, key=lab.key))
        response = conn.response()
        assert response.status == 200
        assert (response.header("connection") or "").lower() != "close"
        idle_since = time.monotonic()
        early = wait_closed(sock, NOT_BEFORE, idle_since)
        assert not early.closed, f"{early.describe()} of keep-alive idleness, before idle_timeout"
        result = wait_closed(sock, 2 + SLACK + 1, idle_since)
    expect_closed(result, 2 + SLACK, "an authenticated HTTP/1.1 keep-alive connection left idle")


# ---------------------------------------------------------------------------------------------
# 6. A stream in flight outlives every timeout


def _sse_h1(kw, key, seconds):
    sock = connect(kw, ["http/1.1"])
    with sock:
        conn = H1Conn(sock)
        conn.send(h1_request(f"/sse?seconds={seconds}", host=kw.authority, key=key,
                             extra=(("Accept", "text/event-stream"),)))
        status, headers = conn.head()
        data = bytearray()
        try:
            for piece in conn.chunks(headers, seconds + 10):
                data += piece
        except (PeerClosed, TimeoutError) as err:
            return status, _events(data), f"cut: {type(err).__name__} {err}"
        return status, _events(data), "ended"


def _sse_h2(kw, key, seconds):
    client, sock = _h2(kw)
    with sock:
        sid = client.request(f"/sse?seconds={seconds}", key, authority=kw.authority,
                             scheme=_scheme(kw), extra=(("accept", "text/event-stream"),))
        response = client.response(sid, seconds + 10)
        if response.ended:
            how = "ended"
        elif response.reset is not None:
            how = f"cut: RST_STREAM {response.reset}"
        else:
            how = f"cut: {client.goaway_text()}, closed={client.closed}"
        return response.status, _events(bytes(response.body)), how


def _events(data: bytes) -> list[int]:
    return [int(block.removeprefix(b"data: ")) for block in bytes(data).split(b"\n\n") if block.strip()]


@pytest.mark.parametrize("transport", ["plain", "tls"])
def test_sse_stream_outlives_every_timeout(lab, transport):
    """Two SSE streams (HTTP/1.1 and h2) of 6 s run while every timeout (1-2 s) fires on other
    connections: zero-byte TCP, idle h2 (plain); no handshake, silent TLS (both ALPNs), idle
    h2 over TLS. Every event arrives and both streams end normally; the hostile ones are
    closed meanwhile."""
    kw = lab.keyward(
        tls=transport == "tls", tls_options={"handshake_timeout": "1s"},
        header_read_timeout="1s", unauthenticated_timeout="2s", idle_timeout="2s",
    )
    with ThreadPoolExecutor(max_workers=8) as pool:
        streams = {
            "SSE over HTTP/1.1": pool.submit(_sse_h1, kw, lab.key, SSE_SECONDS),
            "SSE over h2": pool.submit(_sse_h2, kw, lab.key, SSE_SECONDS),
        }
        time.sleep(0.5)  # both streams are flowing before the hostile connections start

        def silent(open_socket, bound):
            sock = open_socket()
            with sock:
                return wait_closed(sock, bound + 1), bound

        def idle_h2(bound):
            client, sock = _h2(kw)
            with sock:
                result = client.wait_closed(bound + 1)
            return result, bound

        hostile = {"idle h2": pool.submit(idle_h2, 2 + SLACK)}
        if transport == "plain":
            hostile["zero-byte TCP"] = pool.submit(silent, lambda: tcp(kw.ingress), 1 + SLACK)
        else:
            hostile["no TLS handshake"] = pool.submit(silent, lambda: tcp(kw.ingress), 1 + SLACK)
            for alpn in ("h2", "http/1.1"):
                hostile[f"silent after handshake ({alpn})"] = pool.submit(
                    silent, lambda alpn=alpn: tls(kw.ingress, kw.tls, [alpn]), 1 + SLACK
                )
        outcomes = {name: future.result() for name, future in streams.items()}
        closes = {name: future.result() for name, future in hostile.items()}

    expected = list(range(sse_count(SSE_SECONDS)))
    for name, (status, events, how) in outcomes.items():
        assert status == 200, f"{name}: status {status}"
        assert how == "ended", f"{name} did not end normally ({how}) after {len(events)} events"
        assert events == expected, f"{name}: got {len(events)} of {len(expected)} events"
    for name, (result, bound) in closes.items():
        expect_closed(result, bound, f"{name} (while the SSE streams ran)")


# ---------------------------------------------------------------------------------------------
# 7. Many silent connections


def test_valid_client_is_served_beside_4000_silent_connections(lab):
    count = 4000
    raise_nofile(2 * count + 1024)  # ours; keyward inherits it
    kw = lab.keyward(
        max_connections=4096, header_read_timeout="5s", unauthenticated_timeout="5s",
        idle_timeout="5s",
    )
    # keyward's descriptors before: the fewest seen over 0.3 s (secret and certificate
    # watchers open files now and then).
    base = kw.open_fds()
    for _ in range(15):
        time.sleep(0.02)
        base = min(base, kw.open_fds())
    socks: list[socket.socket] = []
    try:
        # In batches that keyward takes in before the next: a burst larger than the listen
        # backlog (128) overflows the accept queue, and the kernel drops connections the
        # client already counts as established.
        opened = time.monotonic()
        while len(socks) < count:
            socks += open_silent(kw.ingress, min(100, count - len(socks)), within=10)
            deadline = time.monotonic() + 5
            while kw.open_fds() - base < len(socks) and time.monotonic() < deadline:
                time.sleep(0.005)
        all_in = time.monotonic()
        held = kw.ingress_connections()
        assert held >= count, f"keyward took in only {held} of {count} silent connections"

        started = time.monotonic()
        response = h1_get(kw, lab.key, timeout=1.0)
        took = time.monotonic() - started
        assert response.status == 200, f"status {response.status} beside {count} silent connections"
        assert took < 1.0, f"the valid request took {took:.2f}s beside {count} silent connections"
        still_held = kw.ingress_connections()
        assert still_held >= count, (
            f"only {still_held} of the {count} silent connections were still open once the valid "
            f"client had been served ({time.monotonic() - opened:.2f}s after the first)"
        )

        # And header_read_timeout (5s) ends every one of them.
        left_open = wait_all_closed(socks, max(0.0, all_in + 5 + SLACK - time.monotonic()))
        assert left_open == 0, (
            f"{left_open} of {count} zero-byte connections still open {time.monotonic() - all_in:.1f}s "
            f"after the last was accepted ({all_in - opened:.2f}s after the first; "
            f"header_read_timeout 5s)"
        )
        assert h1_get(kw, lab.key).status == 200, "after the silent connections were closed"
    finally:
        for sock in socks:
            sock.close()


# ---------------------------------------------------------------------------------------------
# 8. ALPN is binding


def test_alpn_h2_connection_does_not_answer_http1(lab):
    kw = lab.keyward(tls=True, header_read_timeout="2s", unauthenticated_timeout="2s",
                     idle_timeout="2s")
    sock = tls(kw.ingress, kw.tls, ["h2"])
    with sock:
        assert sock.selected_alpn_protocol() == "h2"
        sock.sendall(h1_request("/json", host=kw.authority, key=lab.key))
        result = wait_closed(sock, 4)
    data = result.data
    assert b"HTTP/1." not in data, "keyward answered HTTP/1.1 on a connection that negotiated h2"
    codes = goaway_codes(data)
    if codes:
        assert codes[-1] == PROTOCOL_ERROR, f"GOAWAY with error code {codes[-1]}, not PROTOCOL_ERROR"
    else:
        assert result.closed, f"no GOAWAY and {result.describe()}"
    assert "/json" not in lab.backend.targets(), "the HTTP/1.1 request reached the backend"


def test_alpn_http1_connection_does_not_speak_h2(lab):
    """The other way round: ALPN http/1.1, then the h2 preface and a request."""
    kw = lab.keyward(tls=True, header_read_timeout="2s", unauthenticated_timeout="2s",
                     idle_timeout="2s")
    sock = tls(kw.ingress, kw.tls, ["http/1.1"])
    with sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
        client = H2Conn(sock)
        client.request("/json", lab.key, authority=kw.authority, scheme="https")
        result = wait_closed(sock, 4)
    data = result.data
    speaks_h2 = len(data) >= 9 and data[3] == SETTINGS and data[5:9] == bytes(4)
    assert not speaks_h2, "keyward spoke h2 on a connection that negotiated http/1.1"
    assert not data.startswith(b"HTTP/1.1 2"), "a 2xx for an h2 preface on http/1.1"
    assert "/json" not in lab.backend.targets(), "the h2 request reached the backend"


# ---------------------------------------------------------------------------------------------
# 9. Host


@pytest.mark.parametrize(
    ("case", "hosts", "status"),
    [
        ("control", "AUTHORITY", 200),
        ("missing", None, 400),
        ("duplicate-same", ["AUTHORITY", "AUTHORITY"], 400),
        ("duplicate-different", ["AUTHORITY", "evil.example"], 400),
    ],
)
def test_http1_host_rules(lab, case, hosts, status):
    kw = lab.keyward(header_read_timeout="2s", unauthenticated_timeout="2s", idle_timeout="2s")
    if hosts == "AUTHORITY":
        hosts = kw.authority
    elif hosts is not None:
        hosts = [kw.authority if h == "AUTHORITY" else h for h in hosts]
    sock = tcp(kw.ingress)
    with sock:
        conn = H1Conn(sock)
        conn.send(h1_request(f"/json?case={case}", host=hosts, key=lab.key))
        response = conn.response()
    assert response.status == status, f"{case}: status {response.status}, expected {status}"
    if status != 200:
        assert f"/json?case={case}" not in lab.backend.targets(), f"{case} reached the backend"


@pytest.mark.parametrize(
    ("case", "host"),
    [("authority-only", None), ("matching-host", "AUTHORITY"), ("mismatch", "evil.example")],
)
def test_h2_authority_and_host_must_agree(lab, case, host):
    kw = lab.keyward(header_read_timeout="2s", unauthenticated_timeout="2s", idle_timeout="2s")
    sock = tcp(kw.ingress)
    with sock:
        client = H2Conn(sock, validate_outbound=False)
        extra = () if host is None else (("host", kw.authority if host == "AUTHORITY" else host),)
        sid = client.request(f"/json?case={case}", lab.key, authority=kw.authority, extra=extra)
        response = client.response(sid)
    if case != "mismatch":
        assert (response.status, response.ended) == (200, True), (
            f"{case}: status {response.status}, reset {response.reset}, {client.goaway_text()}"
        )
        return
    refused = (
        response.status == 400
        or response.reset == PROTOCOL_ERROR
        or PROTOCOL_ERROR in client.goaways
    )
    assert refused, (
        f"mismatched :authority and host: status {response.status}, reset {response.reset}, "
        f"{client.goaway_text()}; expected 400 or PROTOCOL_ERROR"
    )
    assert "/json?case=mismatch" not in lab.backend.targets(), "the mismatched request reached the backend"


# ---------------------------------------------------------------------------------------------
# 10. h2 floods


def _still_serving(lab, kw) -> None:
    assert kw.alive(), "keyward exited during the flood"
    response = h1_get(kw, lab.key, timeout=3)
    assert response.status == 200, f"a fresh HTTP/1.1 request after the flood got {response.status}"
    client, sock = _h2(kw)
    with sock:
        sid = client.request("/json", lab.key, authority=kw.authority)
        h2_response = client.response(sid, 3)
    assert h2_response.status == 200, f"a fresh h2 request after the flood got {h2_response.status}"


@pytest.mark.parametrize("pace", ["burst", "paced"])
def test_rapid_reset_flood(lab, pace):
    """1,000 streams (valid key, a 2 s SSE stream each) opened and reset at once, in batches
    of 50, or one by one with a few milliseconds between HEADERS and RST_STREAM, so that
    keyward has taken each in and started its backend request. The flooding connection is
    closed, by keyward's flood defence or, once it stops, after idle_timeout; keyward serves
    on."""
    kw = lab.keyward(header_read_timeout="1s", unauthenticated_timeout="2s", idle_timeout="2s")
    client, sock = _h2(kw)
    target = "/sse?seconds=2"
    opened, batch = 0, 50 if pace == "burst" else 1
    with sock:
        started = time.monotonic()
        while opened < 1000 and not (client.closed or client.done) and time.monotonic() - started < 10:
            sids = []
            for _ in range(batch):
                sids.append(client.request(target, lab.key, authority=kw.authority, flush=False))
                opened += 1
            if pace == "paced":
                client.flush()
                client.pump(0.002)
                if client.done or client.closed:
                    break
            for sid in sids:
                with contextlib.suppress(h2.exceptions.ProtocolError):  # already ended
                    client.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            client.flush()
            client.pump(0.0)
        flood_took = time.monotonic() - started
        result = client.wait_closed(2 + SLACK + 1)
    expect_closed(
        result, 2 + SLACK,
        f"the rapid-reset connection ({opened} streams opened and reset in {flood_took:.2f}s, "
        f"{client.goaway_text()})",
    )
    _still_serving(lab, kw)


def test_continuation_flood(lab):
    kw = lab.keyward(header_read_timeout="1s", unauthenticated_timeout="2s", idle_timeout="2s")
    sock = tcp(kw.ingress)
    sent, how = 0, "all sent"
    received = bytearray()
    with sock:
        sock.sendall(H2_PREFACE + frame(SETTINGS, 0, 0))
        block = request_block(kw.authority, "/json", lab.key)
        sock.sendall(frame(HEADERS, END_STREAM, 1, block))  # no END_HEADERS: more to come
        field = literal_header(b"x-flood", b"a" * 4000)
        payload = (field * 5)[:16384]
        piece = frame(CONTINUATION, 0, 1, payload)
        sock.settimeout(1.0)
        started = time.monotonic()
        while sent < 1000 and time.monotonic() - started < 5:
            try:
                sock.sendall(piece * 10)
            except socket.timeout:
                how = "keyward stopped reading"
                break
            except OSError as err:
                how = f"send failed: {type(err).__name__}"
                break
            sent += 10
        result = wait_closed(sock, 1 + SLACK + 1)
        received += result.data
    expect_closed(
        result, 1 + SLACK,
        f"the CONTINUATION-flood connection ({sent} frames of 16 KiB, {how}, "
        f"GOAWAY codes {goaway_codes(bytes(received))})",
    )
    assert "/json" not in lab.backend.targets(), "the flooded header block reached the backend"
    _still_serving(lab, kw)


# ---------------------------------------------------------------------------------------------
# 11. Slow readers


# A slow reader holds under 128 KiB of keyward's memory (measured 110-113 KiB), with the safety
# net's streaming scan (the default) as without it: a frame after a held-back end is sent as
# the view it came in, not copied behind the held bytes (it was: 134-165 KiB with the net on).
@pytest.mark.parametrize("safety_net", ["off", "redact"])
def test_slow_readers_cost_bounded_memory(lab, safety_net):
    limit_kib = 128
    count, wait = 100, 3.0
    kw = lab.keyward(
        header_read_timeout="5s", unauthenticated_timeout="5s", idle_timeout="5s",
        safety_net=safety_net,
    )
    # Warm up: one whole 4 MiB response, so the first connection's allocations are not counted.
    warm = h1_get(kw, lab.key, "/big", timeout=20)
    assert warm.status == 200 and hashlib.sha256(warm.body).hexdigest() == lab.backend.big_sha256
    time.sleep(0.3)
    before = kw.rss_kib()

    socks = []
    try:
        for _ in range(count):
            sock = tcp(kw.ingress, rcvbuf=4096)
            sock.sendall(h1_request("/big", host=kw.authority, key=lab.key))
            socks.append(sock)
        peak, until = before, time.monotonic() + wait
        while time.monotonic() < until:
            peak = max(peak, kw.rss_kib())
            time.sleep(0.1)
        after = kw.rss_kib()
        per_conn = (after - before) / count
        assert per_conn < limit_kib, (
            f"keyward's RSS grew {after - before} KiB for {count} connections that read nothing: "
            f"{per_conn:.1f} KiB per connection (limit {limit_kib}; peak {peak - before} KiB, "
            f"before {before} KiB)"
        )
        # One of them reads to the end, fast: all 4 MiB, intact.
        reader = socks[0]
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        conn = H1Conn(reader)
        started = time.monotonic()
        response = conn.response(timeout=30)
        took = time.monotonic() - started
        assert response.status == 200
        assert len(response.body) == BIG_SIZE, f"{len(response.body)} of {BIG_SIZE} bytes arrived"
        assert hashlib.sha256(response.body).hexdigest() == lab.backend.big_sha256, "body corrupted"
        print(f"slow readers: {per_conn:.1f} KiB per connection; one read 4 MiB in {took:.2f}s")
    finally:
        for sock in socks:
            sock.close()
