"""What test_safety_net.py drives the pod with: the stand-in's leak modes (set through its
control endpoint), every form keyward's net looks for (to assert absence), keyward's leak
counters and audit events, one tool call through the official client, and raw requests.

Secret values are read from the pod's secret files; every check on them is a bool, so that a
failing assertion never prints a value.
"""

from __future__ import annotations

import base64
import re
import time
import urllib.parse

import httpx

import pod as podlib
from hostile_support import H1Conn, PeerClosed, h1_request, tcp
from mcp_calls import mcp_session, run

REDACTED = "[REDACTED]"
LEAK_METRIC = "keyward_secret_leaks_blocked_total"
MODES = ("echo", "base64", "split", "gzip", "client-key")
DAY = "2025-02-02"
HTTP = httpx.Timeout(20)


# ---------------------------------------------------------------------------------------------
# Forms


def _b64_cores(value: bytes, alphabet: bytes) -> list[str]:
    """The characters a value alone determines in a longer base64 text, at each of the three
    offsets it can start at (what keyward looks for: padding and neighbours left out)."""
    cores = []
    for offset in range(3):
        text = base64.b64encode(b"\0" * offset + value + b"\0\0")
        if alphabet == b"-_":
            text = text.replace(b"+", b"-").replace(b"/", b"_")
        first = -(-8 * offset // 6)
        last = (8 * (offset + len(value)) - 6) // 6
        cores.append(text[first:last + 1].decode())
    return cores


def forms(value: str) -> list[str]:
    """`value` raw, hex in both cases, percent-encoded, base64 and base64url at each offset;
    and pod.py's forms of the bytes a URL-safe base64 key stands for."""
    raw = value.encode()
    found = {value, raw.hex(), raw.hex().upper()}
    found.add(urllib.parse.quote(value, safe=""))
    found.add("".join(f"%{b:02x}" for b in raw))
    found.add("".join(f"%{b:02X}" for b in raw))
    for alphabet in (b"+/", b"-_"):
        found.update(_b64_cores(raw, alphabet))
    found.update(podlib.secret_forms(value))
    return sorted(f for f in found if len(f) >= 6)


def pod_forms(pod, *extra: str) -> list[str]:
    """Every form of every secret the pod holds (and of `extra` values, e.g. a rotated-out key)."""
    return [form for value in (*pod.secret_values(), *extra) for form in forms(value)]


def holds(text: str | bytes, needles: list[str]) -> bool:
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return any(needle in text for needle in needles)


def assert_clean(pod, texts: dict[str, str | bytes], *extra: str) -> None:
    needles = pod_forms(pod, *extra)
    for place, text in texts.items():
        leaked = holds(text, needles)
        assert not leaked, f"a secret, in some form, reached {place}"


# ---------------------------------------------------------------------------------------------
# The stand-in


def standin_url(pod, path: str = "") -> str:
    return f"http://{pod.standin_addr}{path}"


def set_leak(pod, mode: str) -> None:
    reply = httpx.post(standin_url(pod, "/_leak"), json={"mode": mode}, timeout=HTTP)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"mode": mode}


def leak_mode(pod) -> str:
    return httpx.get(standin_url(pod, "/_leak"), timeout=HTTP).json()["mode"]


def direct_get(pod, path: str) -> httpx.Response:
    """A GET of the stand-in itself (not through keyward) with the APIM key, as keyward sends."""
    key = pod.state.secret(podlib.APIM_SECRET)
    headers = {"Ocp-Apim-Subscription-Key": key, "Accept": "application/json"}
    return httpx.get(standin_url(pod, path), headers=headers, timeout=HTTP)


def raw_get(addr: str, target: str, extra: tuple[tuple[str, str], ...] = (), timeout=10.0):
    """One HTTP/1.1 GET by hand; returns (status, headers, body chunks as they arrived)."""
    status, headers, chunks, whole = raw_get_until_cut(addr, target, extra, timeout)
    assert whole, "the answer was cut"
    return status, headers, chunks


def raw_get_until_cut(addr: str, target: str, extra: tuple[tuple[str, str], ...] = (),
                      timeout=10.0):
    """Like raw_get, and whether the body came whole: (status, headers, chunks, whole)."""
    host, port = addr.rsplit(":", 1)
    sock = tcp((host, int(port)), timeout=timeout)
    try:
        conn = H1Conn(sock)
        conn.send(h1_request(target, host=addr, key=None, extra=(("Connection", "close"), *extra)))
        status, headers = conn.head(timeout)
        chunks = []
        try:
            for chunk in conn.chunks(headers, timeout):
                chunks.append(chunk)
        except PeerClosed:
            return status, headers, chunks, False
        return status, headers, chunks, True
    finally:
        sock.close()


# ---------------------------------------------------------------------------------------------
# keyward's account of what it caught


_SAMPLE = re.compile(LEAK_METRIC + r'\{listener="([^"]+)",secret="([^"]+)"\} (\d+)')


def metrics_text(pod) -> str:
    return httpx.get(f"{pod.admin_url}/metrics", timeout=HTTP).text


def leak_counts(pod) -> dict[tuple[str, str], int]:
    """`(listener, secret name) -> count` from keyward's /metrics."""
    return {(m[1], m[2]): int(m[3]) for m in _SAMPLE.finditer(metrics_text(pod))}


def grew(before: dict, after: dict) -> dict[tuple[str, str], int]:
    """The counters that moved, by how much."""
    return {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}


def audits(pod, reason: str) -> list[dict]:
    """keyward's audit events with `reason`, fields flattened."""
    found = []
    for line in pod.logs("keyward")["keyward"].splitlines():
        event = podlib._json_line(line)
        if not event or event.get("target") != "keyward::audit":
            continue
        fields = {**event, **(event.get("fields") or {})}
        if fields.get("reason") == reason:
            found.append(fields)
    return found


def wait_for(condition, timeout: float = 10.0, step: float = 0.1):
    """Polls `condition()` until it returns something truthy (returned) or `timeout` passes
    (None): for log lines, which the processes write after answering."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value or None
        time.sleep(step)


# ---------------------------------------------------------------------------------------------
# The official client


def call_tools(pod, calls: list[tuple[str, dict]], timeout: float = 60):
    """Each (tool, arguments) called in one MCP session through keyward's ingress; the
    results, in order."""

    async def session():
        async with mcp_session(pod.mcp_url, {"X-Api-Key": pod.client_key()}) as (client, _):
            return [await client.call_tool(name, args) for name, args in calls]

    return run(session(), timeout=timeout)


def call_tool(pod, name: str, args: dict, timeout: float = 60):
    return call_tools(pod, [(name, args)], timeout)[0]


def every_tool_call() -> list[tuple[str, dict]]:
    """The twelve tools, each with arguments the stand-in answers."""
    calls = []
    for domain in ("activity", "sleep", "food", "vitals"):
        calls.append((f"get_{domain}_by_date", {"date": DAY}))
        calls.append((
            f"get_{domain}_by_date_range",
            {"startDate": "2025-03-01", "endDate": "2025-03-07", "pageNumber": 1, "pageSize": 5},
        ))
        calls.append((f"get_{domain}_records", {"pageNumber": 2, "pageSize": 3}))
    return calls


def standin_path(name: str, args: dict) -> str:
    """The stand-in's path for a tool call, as mcp-backend builds it behind keyward's route."""
    domain, shape = name.removeprefix("get_").split("_", 1)
    if shape == "by_date":
        return f"/biotrackr/{domain}/{args['date']}"
    page = f"pageNumber={args['pageNumber']}&pageSize={args['pageSize']}"
    if shape == "by_date_range":
        return f"/biotrackr/{domain}/range/{args['startDate']}/{args['endDate']}?{page}"
    return f"/biotrackr/{domain}?{page}"

