"""What test_grants.py drives keyward with: the API-key clients and their grants, raw JSON-RPC
over HTTP (one message or a batch, answered as JSON or SSE), what a recording hop saw each
client send, and the two setups:

    GrantsPod:    client --X-Api-Key--> keyward --> recording hop --> mcp-backend (stateless,
                  SSE or --json-response)
    SessionPods:  client --> keyward #1 --> mcp-backend --stateful <-- keyward #2 <-- client
                  (both keywards read one secrets directory and share ingress.session_secret)

Keys are read from the pod's secret files and sent in headers only; nothing here prints one.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import httpx

import pod as podlib
from recording_backend import Recorded, RecordingBackend

PROTOCOL = "2025-06-18"
ACCEPT = "application/json, text/event-stream"
HTTP_TIMEOUT = httpx.Timeout(20)
DAY = "2025-02-02"

# Beside the pod's own client (podlib.CLIENT_ID), which has no grants and so reaches everything.
ACTIVITY = podlib.Client("activity", "mcp-client-activity", tools=("get_activity_*",))
MIXED = podlib.Client(
    "activity-and-one-sleep", "mcp-client-mixed", tools=("get_activity_*", "get_sleep_by_date")
)
NOTHING = podlib.Client("nothing", "mcp-client-nothing", tools=(), resources=(), prompts=())
GRANT_CLIENTS = (ACTIVITY, MIXED, NOTHING)
# The second client of the session tests: no grants, its own key.
OTHER = podlib.Client("other", "mcp-client-other")
SESSION_SECRET = "mcp-session-key"

# keyward's answer to a tools/call the client may not make, and to a header that contradicts
# the body.
NOT_PERMITTED = {"code": -32602, "message": "tool not permitted for this client"}
HEADER_MISMATCH = -32020
PARSE_ERROR = -32700


# ---------------------------------------------------------------------------------------------
# JSON-RPC over HTTP


def rpc(id_: int, method: str, params: dict | None = None) -> dict:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params or {}}


def tool_call(id_: int, name: str, arguments: dict | None = None) -> dict:
    return rpc(id_, "tools/call", {"name": name, "arguments": arguments or {}})


INITIALIZE = rpc(
    1, "initialize",
    {"protocolVersion": PROTOCOL, "capabilities": {},
     "clientInfo": {"name": "test-grants", "version": "0"}},
)
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def headers(key: str, session: str | None = None, extra: dict | None = None) -> dict[str, str]:
    sent = {"Accept": ACCEPT, "X-Api-Key": key, "MCP-Protocol-Version": PROTOCOL}
    if session is not None:
        sent["Mcp-Session-Id"] = session
    return {**sent, **(extra or {})}


def post(
    url: str,
    key: str,
    body: dict | list | None = None,
    *,
    session: str | None = None,
    extra: dict | None = None,
    content: bytes | None = None,
) -> httpx.Response:
    """One POST of `body` (or of raw `content`), answered in full."""
    data = content if content is not None else json.dumps(body).encode()
    return httpx.post(
        url, content=data, timeout=HTTP_TIMEOUT,
        headers={"Content-Type": "application/json", **headers(key, session, extra)},
    )


def messages(reply: httpx.Response) -> list[dict]:
    """The JSON-RPC messages in an answer: a JSON object or array, or the SSE `data:` lines;
    none when the answer is neither (rmcp's plain-text refusals)."""
    kind = reply.headers.get("content-type", "")
    if kind.startswith("text/event-stream"):
        values = []
        for line in reply.text.splitlines():
            if line.startswith("data:"):
                with contextlib.suppress(ValueError):
                    values.append(json.loads(line[len("data:"):].strip()))
    elif kind.startswith("application/json"):
        values = [reply.json()]
    else:
        return []
    flat = []
    for value in values:
        flat.extend(value if isinstance(value, list) else [value])
    return [m for m in flat if isinstance(m, dict)]


def answer_to(reply: httpx.Response, id_: int) -> dict:
    found = [m for m in messages(reply) if m.get("id") == id_ and "method" not in m]
    assert len(found) == 1, f"no single answer to id {id_}: HTTP {reply.status_code} {reply.text}"
    return found[0]


def tool_names(answer: dict) -> set[str]:
    return {tool["name"] for tool in answer["result"]["tools"]}


def leaks(pods: list[podlib.Pod], texts: dict[str, str]) -> list[str]:
    """The names of `texts` holding any form of any key of `pods` (client keys, the session
    secret, the upstream key); assertions use the names, so a failure never prints a key."""
    forms = {f for pod in pods for v in pod.secret_values() for f in podlib.secret_forms(v)}
    return [name for name, text in texts.items() if any(form in text for form in forms)]


# ---------------------------------------------------------------------------------------------
# What reached the backend


def sent_by(recorded: list[Recorded], client: str) -> list[Recorded]:
    """The requests keyward forwarded as `client` (its X-Keyward-Client)."""
    return [r for r in recorded if r.values("X-Keyward-Client") == [client]]


def forwarded(recorded: list[Recorded]) -> list[dict]:
    """Every JSON-RPC message in those requests' bodies, batches flattened."""
    found = []
    for record in recorded:
        if record.method != "POST" or not record.body:
            continue
        value = json.loads(record.body)
        found.extend(value if isinstance(value, list) else [value])
    return found


def called_tools(recorded: list[Recorded]) -> list[str]:
    return [
        m.get("params", {}).get("name")
        for m in forwarded(recorded)
        if m.get("method") == "tools/call"
    ]


# ---------------------------------------------------------------------------------------------
# The setups


class GrantsPod:
    """A recording hop and a pod whose keyward knows GRANT_CLIENTS beside its own client and
    forwards to the hop, which forwards to a stateless mcp-backend answering in `mode`: "sse"
    (its default) or "json" (`--json-response`)."""

    def __init__(self, bins: Path, directory: Path, mode: str = "sse"):
        if mode not in ("sse", "json"):
            raise ValueError("mode is 'sse' or 'json'")
        self._stack = contextlib.ExitStack()
        self.bins, self.directory, self.mode = bins, directory, mode

    def __enter__(self) -> GrantsPod:
        try:
            self.recorder = self._stack.enter_context(RecordingBackend())
            self.pod = self._stack.enter_context(
                podlib.Pod(
                    self.directory / "pod", ports="auto", bins=self.bins,
                    ingress_backend=self.recorder.addr, clients=GRANT_CLIENTS,
                    backend_flags=("--json-response",) if self.mode == "json" else (),
                )
            )
            self.recorder.target = self.pod.backend_addr
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def key(self, client: podlib.Client | None = None) -> str:
        return self.pod.client_key(client)

    def official_headers(self, client: podlib.Client | None = None) -> dict[str, str]:
        return {"X-Api-Key": self.key(client)}


class SessionPods:
    """A pod with `mcp-backend --stateful`, whose keyward knows OTHER beside its own client and
    binds sessions with SESSION_SECRET, and a second keyward (a Sidecar) in front of the same
    backend with the same clients, reading the pod's secrets directory."""

    def __init__(self, bins: Path, directory: Path):
        self._stack = contextlib.ExitStack()
        self.bins, self.directory = bins, directory

    def __enter__(self) -> SessionPods:
        try:
            self.pod = self._stack.enter_context(
                podlib.Pod(
                    self.directory / "pod", ports="auto", bins=self.bins, clients=(OTHER,),
                    session_secret=SESSION_SECRET, backend_flags=("--stateful",),
                )
            )
            self.second = self._stack.enter_context(
                self.replica(self.directory / "second", SESSION_SECRET)
            )
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def replica(self, directory: Path, session_secret: str | None) -> podlib.Sidecar:
        """Another keyward in front of the pod's backend with the pod's secrets and clients,
        not started."""
        return podlib.Sidecar(
            directory, backend=self.pod.backend_addr, bins=self.bins,
            clients=(OTHER,), session_secret=session_secret, secrets_from=self.pod.state,
        )

    def key(self, client: podlib.Client | None = None) -> str:
        return self.pod.client_key(client)

    def open_session(self, url: str, key: str) -> str:
        """initialize and notifications/initialized as the key's client; the session id it got."""
        reply = post(url, key, INITIALIZE)
        assert reply.status_code == 200, reply.text
        assert answer_to(reply, 1)["result"]["serverInfo"]["name"] == "mcp-backend"
        session = reply.headers.get("mcp-session-id")
        assert session, "initialize through keyward carried no Mcp-Session-Id"
        ack = post(url, key, INITIALIZED, session=session)
        assert ack.status_code == 202, ack.text
        return session
