"""keyward beside an MCP server that is not ours: the official reference server
`@modelcontextprotocol/server-everything` (Streamable HTTP, stateful sessions, SSE for
progress, logging, resource updates and server-to-client requests), pinned with the MCP
Inspector and node 22 in everything/package.json and installed from npm into a temporary
directory during the session; skipped, saying why, when the registry cannot be reached.

    official MCP Python client --X-Api-Key--> keyward (pod.Sidecar) --> server-everything
    conformance suite --> header hop (adds X-Api-Key) --> keyward --> server-everything
    MCP Inspector --cli --header "X-Api-Key: ..." --> keyward --> server-everything

Every answer that does not depend on the clock is compared with the answer the same server
gives directly; the conformance suite runs directly and through keyward, and every scenario
must end the same way both times but for the differences listed (with their reason) in
DIFFERENCES. Everything listens on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pty
import re
import subprocess
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from mcp import ClientSession, McpError, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from pydantic import AnyUrl

import pod as podlib
from background_installs import HERE, install
from mcp_calls import run

pytestmark = pytest.mark.everything

START_TIMEOUT = 30.0
SUITE_TIMEOUT = 120
CLI_TIMEOUT = 60

# ---------------------------------------------------------------------------------------------
# server-everything, keyward in front of it, and a hop that adds the key


class Everything:
    """server-everything in Streamable HTTP mode on 127.0.0.1, a free port. It listens on every
    interface by itself (`app.listen(PORT)`); everything/loopback.cjs, preloaded, binds it to
    127.0.0.1 and prints the address."""

    def __init__(self, npm_dir: Path, log_dir: Path):
        node = npm_dir / "node_modules" / ".bin" / "node"
        package = npm_dir / "node_modules" / "@modelcontextprotocol" / "server-everything"
        preload = HERE / "everything" / "loopback.cjs"
        env = {
            "PATH": f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(log_dir),
            "PORT": "0",
        }
        self.child = podlib.Child(
            "server-everything",
            [str(node), "--require", str(preload), str(package / "dist" / "index.js"),
             "streamableHttp"],
            log_dir / "server-everything.log",
            env,
        )

    def __enter__(self) -> Everything:
        try:
            self.addr = self.child.wait_line(_listening, START_TIMEOUT)
        except BaseException:
            self.__exit__()
            raise
        assert self.addr.startswith("127.0.0.1:"), self.addr
        self.url = f"http://{self.addr}/mcp"
        return self

    def __exit__(self, *exc) -> None:
        self.child.terminate()
        self.child.reap(time.monotonic() + podlib.STOP_TIMEOUT)


def _listening(line: str) -> str | None:
    event = podlib._json_line(line)
    return event.get("listening") if event else None


class HeaderHop:
    """127.0.0.1:0 in front of `target` (host:port): adds `headers` to every request head of
    every connection (replacing any the client sent), copies request bodies as they are framed
    (Content-Length or chunked) and the answers back byte for byte as they arrive, so SSE
    streams through unbuffered. For a client that can send no header of its own."""

    def __init__(self, target: str, headers: dict[str, str]):
        self.host, port = target.rsplit(":", 1)
        self.port = int(port)
        self.names = {name.lower().encode() for name in headers}
        self.extra = b"".join(f"{n}: {v}\r\n".encode() for n, v in headers.items())
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hop", daemon=True)
        self._tasks: set[asyncio.Task] = set()

    def __enter__(self) -> HeaderHop:
        self._thread.start()
        start = asyncio.start_server(self._connection, "127.0.0.1", 0)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
        self.addr = "127.0.0.1:%d" % self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        async def close():
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _connection(self, client_r, client_w) -> None:
        self._tasks.add(asyncio.current_task())
        upstream_w = None
        try:
            upstream_r, upstream_w = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), 10
            )
            up = asyncio.ensure_future(self._requests(client_r, upstream_w))
            down = asyncio.ensure_future(self._copy(upstream_r, client_w))
            # HTTP has no use for half-closed connections: when either side ends, both do.
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            for writer in (client_w, upstream_w):
                if writer is not None:
                    writer.close()
            self._tasks.discard(asyncio.current_task())

    async def _requests(self, reader, writer) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            lines = head[:-4].split(b"\r\n")
            fields = [f for f in lines[1:] if f.split(b":", 1)[0].strip().lower() not in self.names]
            writer.write(b"\r\n".join([lines[0], *fields]) + b"\r\n" + self.extra + b"\r\n")
            self.requests += 1
            framing = {}
            for field in fields:
                name, _, value = field.partition(b":")
                framing[name.strip().lower()] = value.strip().lower()
            if b"chunked" in framing.get(b"transfer-encoding", b""):
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    writer.write(size_line)
                    size = int(size_line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                            writer.write(trailer)
                        writer.write(b"\r\n")
                        break
                    await self._copy(reader, writer, size + 2)
            else:
                await self._copy(reader, writer, int(framing.get(b"content-length", b"0")))
            await writer.drain()

    @staticmethod
    async def _copy(reader, writer, length: int | None = None) -> None:
        """`length` bytes, or everything until the end of the stream, each read written on."""
        while length is None or length > 0:
            data = await reader.read(65536 if length is None else min(length, 65536))
            if not data:
                if length is None:
                    return
                raise asyncio.IncompleteReadError(b"", length)
            writer.write(data)
            await writer.drain()
            if length is not None:
                length -= len(data)


@pytest.fixture(scope="module")
def npm_dir() -> Path:
    return install("everything").wait()


@pytest.fixture(scope="module")
def everything(npm_dir, tmp_path_factory):
    with Everything(npm_dir, tmp_path_factory.mktemp("everything")) as server:
        yield server


@pytest.fixture(scope="module")
def sidecar(bins, everything, tmp_path_factory):
    state = tmp_path_factory.mktemp("sidecar")
    with podlib.Sidecar(state, backend=everything.addr, bins=bins) as running:
        yield running


@pytest.fixture(scope="module")
def hop(sidecar):
    """keyward for a client that sends no key: the hop adds it."""
    with HeaderHop(sidecar.ingress, {"X-Api-Key": sidecar.client_key()}) as running:
        yield running


@pytest.fixture(scope="module")
def targets(everything, sidecar) -> dict[str, tuple[str, dict[str, str]]]:
    """The same server twice: directly, and through keyward with the client key."""
    return {
        "direct": (everything.url, {}),
        "keyward": (sidecar.mcp_url, {"X-Api-Key": sidecar.client_key()}),
    }


# ---------------------------------------------------------------------------------------------
# The official MCP Python client (1.x)


@asynccontextmanager
async def mcp_session(url: str, headers: dict[str, str], **callbacks):
    """An initialized ClientSession over Streamable HTTP with the given callbacks; yields
    (session, initialize result, session id)."""
    http = create_mcp_http_client(headers=headers, timeout=httpx.Timeout(30, read=60))
    async with http, streamable_http_client(url, http_client=http) as (read, write, session_id):
        async with ClientSession(read, write, **callbacks) as session:
            init = await session.initialize()
            yield session, init, session_id()


async def both(targets, script):
    """`script(url, headers)` directly and through keyward at the same time."""
    direct, keyward = await asyncio.gather(*(script(*targets[k]) for k in ("direct", "keyward")))
    return direct, keyward


_CLOCK = re.compile(r"\b\d{1,2}:\d{2}:\d{2}(\s?[AP]M)?")
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


def normal(value):
    """A result as plain JSON, with what differs from call to call replaced: the wall-clock
    times in the dynamic resources (also inside base64 blobs) and session ids."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "blob" and isinstance(item, str):
                try:
                    item = {"decoded": base64.b64decode(item).decode()}
                except (ValueError, UnicodeDecodeError):
                    pass
            out[key] = normal(item)
        return out
    if isinstance(value, list):
        return [normal(item) for item in value]
    if isinstance(value, str):
        return _UUID.sub("<uuid>", _CLOCK.sub("<time>", value))
    return value


def texts(result) -> list[str]:
    return [block.text for block in result.content if getattr(block, "type", "") == "text"]


async def _answers(url: str, headers: dict[str, str]) -> dict:
    """Lists, reads, prompts, completions and deterministic tool calls, one session."""
    out = {}
    async with mcp_session(url, headers) as (session, init, _):
        out["initialize"] = normal(init)
        out["tools/list"] = normal(await session.list_tools())
        out["resources/list"] = normal(await session.list_resources())
        out["resources/templates/list"] = normal(await session.list_resource_templates())
        out["prompts/list"] = normal(await session.list_prompts())
        calls = [
            ("echo", {"message": "through keyward"}),
            ("get-sum", {"a": 2, "b": 3}),
            ("get-tiny-image", {}),
            ("get-structured-content", {"location": "Chicago"}),
            ("get-annotated-message", {"messageType": "error", "includeImage": True}),
            ("get-resource-reference", {"resourceType": "Blob", "resourceId": 3}),
            ("get-resource-links", {"count": 3}),
            ("get-sum", {"a": "two", "b": 3}),  # invalid arguments: an error result
            ("no-such-tool", {}),
        ]
        for name, arguments in calls:
            try:
                result = normal(await session.call_tool(name, arguments))
            except McpError as err:
                result = {"error": normal(err.error)}
            out[f"tools/call {name} {json.dumps(arguments, sort_keys=True)}"] = result
        static = [r.uri for r in (await session.list_resources()).resources]
        dynamic = ["demo://resource/dynamic/text/1", "demo://resource/dynamic/blob/2"]
        for uri in [*dynamic, *static[:2]]:
            out[f"resources/read {uri}"] = normal(await session.read_resource(AnyUrl(str(uri))))
        for name, arguments in [
            ("simple-prompt", None),
            ("args-prompt", {"city": "Basel", "state": "BS"}),
            ("resource-prompt", {"resourceType": "Text", "resourceId": "2"}),
            ("completable-prompt", {"department": "Sales", "name": "Eve"}),
        ]:
            out[f"prompts/get {name}"] = normal(await session.get_prompt(name, arguments))
        prompt = types.PromptReference(type="ref/prompt", name="completable-prompt")
        out["completion department"] = normal(
            await session.complete(prompt, {"name": "department", "value": "S"})
        )
        out["completion name in Engineering"] = normal(
            await session.complete(
                prompt, {"name": "name", "value": ""}, {"department": "Engineering"}
            )
        )
        template = types.ResourceTemplateReference(
            type="ref/resource", uri="demo://resource/dynamic/text/{resourceId}"
        )
        out["completion resourceId"] = normal(
            await session.complete(template, {"name": "resourceId", "value": "7"})
        )
        out["ping"] = normal(await session.send_ping())
    return out


# keyward's refusal of a request without a valid key, whatever the request.
UNAUTHORIZED = {"error": "unauthorized", "message": "a valid X-Api-Key header is required"}
CHALLENGE = 'ApiKey header="X-Api-Key"'
WRONG_KEY = "not-the-key"


def test_refused_without_the_key(sidecar):
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    accept = {"Accept": "application/json, text/event-stream"}
    for headers in (accept, {**accept, "X-Api-Key": WRONG_KEY}):
        reply = httpx.post(sidecar.mcp_url, json=body, headers=headers, timeout=10)
        assert reply.status_code == 401, reply.text
        assert reply.headers.get("Content-Type", "").startswith("application/json")
        assert reply.json() == UNAUTHORIZED
        assert reply.headers.get("WWW-Authenticate") == CHALLENGE
        # Nothing of the request comes back: not the key sent, not the method asked for.
        answer = reply.text + str(reply.headers)
        assert WRONG_KEY not in answer and '"ping"' not in answer, answer


def test_same_answers_directly_and_through_keyward(targets):
    direct, keyward = run(both(targets, _answers), 90)
    assert direct["initialize"]["serverInfo"]["name"] == "mcp-servers/everything"
    tools = {tool["name"] for tool in direct["tools/list"]["tools"]}
    assert {"echo", "get-sum", "trigger-long-running-operation"} <= tools
    assert direct['tools/call echo {"message": "through keyward"}']["content"][0]["text"] == (
        "Echo: through keyward"
    )
    assert direct['tools/call get-sum {"a": 2, "b": 3}']["content"][0]["text"] == (
        "The sum of 2 and 3 is 5."
    )
    assert direct['tools/call get-sum {"a": "two", "b": 3}']["isError"] is True
    assert len(direct) > 25
    assert list(keyward) == list(direct)
    for key in direct:
        assert keyward[key] == direct[key], key


async def _long_running(url: str, headers: dict[str, str]) -> dict:
    seen = []
    async with mcp_session(url, headers) as (session, _, _):
        started = time.monotonic()

        async def progress(done, total, message):
            seen.append((time.monotonic() - started, done, total))

        result = await session.call_tool(
            "trigger-long-running-operation", {"duration": 5, "steps": 5},
            progress_callback=progress,
        )
        ended = time.monotonic() - started
    return {"result": normal(result), "progress": seen, "ended": ended}


def test_long_running_tool_streams_its_progress(targets, hop):
    """Five progress notifications a second apart on the POST's SSE stream, which keyward keeps
    open for the five seconds and passes on as each event arrives, not at the end; the same
    through the header hop the conformance suite uses, with no key from the client."""
    async def three():
        return await asyncio.gather(
            _long_running(*targets["direct"]),
            _long_running(*targets["keyward"]),
            _long_running(f"http://{hop.addr}/mcp", {}),
        )

    direct, keyward, hopped = run(three(), 60)
    assert keyward["result"] == hopped["result"] == direct["result"]
    assert texts(types.CallToolResult.model_validate(keyward["result"])) == [
        "Long running operation completed. Duration: 5 seconds, Steps: 5."
    ]
    for side in (direct, keyward, hopped):
        steps = [(done, total) for _, done, total in side["progress"]]
        assert steps == [(i, 5) for i in range(1, 6)]
        assert side["ended"] >= 4.8
    for side in (keyward, hopped):
        arrived = [at for at, _, _ in side["progress"]]
        # Each step takes a second: the first event arrives about 4 s before the answer, and
        # the events about a second apart (allowing for a busy machine).
        assert side["ended"] - arrived[0] > 3.0 and arrived[-1] - arrived[0] > 3.0, arrived
        gaps = [later - earlier for earlier, later in zip(arrived, arrived[1:])]
        assert sum(gap > 0.5 for gap in gaps) >= 3, arrived


LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


async def _notifications(url: str, headers: dict[str, str]) -> dict:
    """Server-initiated traffic on the session's GET stream: log messages, resource updates
    and a roots/list request the server sends the client."""
    logs: asyncio.Queue = asyncio.Queue()
    updates: asyncio.Queue = asyncio.Queue()

    async def on_log(params: types.LoggingMessageNotificationParams):
        await logs.put(params)

    async def on_message(message):
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ResourceUpdatedNotification
        ):
            await updates.put(str(message.root.params.uri))

    async def roots(_context) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri="file:///srv/keyward", name="keyward")])

    pending: list[types.LoggingMessageNotificationParams] = []

    async def next_log(wanted: str, timeout: float):
        """The first log message not yet taken whose data contains `wanted`."""
        deadline = time.monotonic() + timeout
        while True:
            for log in pending:
                if wanted in str(log.data):
                    pending.remove(log)
                    return log
            left = max(0.01, deadline - time.monotonic())
            pending.append(await asyncio.wait_for(logs.get(), left))

    out = {}
    uri = "demo://resource/dynamic/text/1"
    async with mcp_session(
        url, headers, logging_callback=on_log, message_handler=on_message, list_roots_callback=roots
    ) as (session, _, session_id):
        assert session_id
        await session.set_logging_level("info")
        # The client opens the GET stream in the background after initialize; a notification
        # sent before it is there is lost. Subscribing makes the server log once each time.
        subscribed = None
        for _ in range(20):
            await session.subscribe_resource(AnyUrl(uri))
            try:
                subscribed = await next_log("Received Subscribe Resource request", 0.5)
                break
            except asyncio.TimeoutError:
                continue
        assert subscribed is not None, "no log message arrived on the GET stream"
        out["subscribe log"] = normal(subscribed)

        out["toggle updates"] = normal(await session.call_tool("toggle-subscriber-updates", {}))
        out["resource updated"] = await asyncio.wait_for(updates.get(), 8)
        await session.call_tool("toggle-subscriber-updates", {})

        out["roots"] = texts(await session.call_tool("get-roots-list", {}))
        # The server asked for the roots on the GET stream, got the answer in a POST, and says so.
        roots_log = await next_log("root(s) received from client", 5)
        out["roots log"] = normal(roots_log)

        await session.set_logging_level("debug")
        await session.call_tool("toggle-simulated-logging", {})
        simulated = await next_log(" - SessionId ", 8)
        await session.call_tool("toggle-simulated-logging", {})
        out["simulated level"] = simulated.level
        # The client holds keyward's <id>.<mac>; the server names its own id.
        out["simulated data"] = str(simulated.data).replace(
            session_id.rpartition(".")[0] or session_id, "<session>"
        )
        await session.unsubscribe_resource(AnyUrl(uri))
    return out


def test_logging_updates_and_roots_on_the_get_stream(targets):
    direct, keyward = run(both(targets, _notifications), 60)
    assert keyward["subscribe log"] == direct["subscribe log"]
    assert keyward["subscribe log"]["level"] == "info"
    assert keyward["subscribe log"]["data"].startswith(
        "Received Subscribe Resource request for URI: demo://resource/dynamic/text/1 "
        "from session <uuid>"
    )
    assert keyward["toggle updates"] == direct["toggle updates"]
    assert keyward["resource updated"] == direct["resource updated"]
    assert keyward["resource updated"] == "demo://resource/dynamic/text/1"
    assert keyward["roots"] == direct["roots"]
    assert "1. keyward\n   URI: file:///srv/keyward" in keyward["roots"][0]
    assert keyward["roots log"] == direct["roots log"]
    assert keyward["roots log"]["data"] == "Roots updated: 1 root(s) received from client"
    for side in (direct, keyward):
        # A random level each time; the text names it and the session.
        assert side["simulated level"] in LEVELS
        assert side["simulated data"].lower().startswith(side["simulated level"])
        assert side["simulated data"].endswith(" - SessionId <session>")


async def _server_requests(url: str, headers: dict[str, str]) -> dict:
    """sampling/createMessage and elicitation/create from the server, answered by the client
    while the tool call that caused them waits."""
    asked = {}

    async def sample(_context, params: types.CreateMessageRequestParams):
        asked["sampling"] = normal(params)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="a sampled answer"),
            model="keyward-test-model",
            stopReason="endTurn",
        )

    async def elicit(_context, params) -> types.ElicitResult:
        asked["elicitation"] = params.message
        return types.ElicitResult(action="accept", content={"name": "Ada", "check": True})

    callbacks = {"sampling_callback": sample, "elicitation_callback": elicit}
    async with mcp_session(url, headers, **callbacks) as (session, _, _):
        sampled = await session.call_tool(
            "trigger-sampling-request", {"prompt": "say hi", "maxTokens": 20}
        )
        elicited = await session.call_tool("trigger-elicitation-request", {})
    return {"asked": asked, "sampled": normal(sampled), "elicited": normal(elicited)}


def test_sampling_and_elicitation_through_keyward(targets):
    direct, keyward = run(both(targets, _server_requests), 60)
    assert keyward == direct
    sampling = keyward["asked"]["sampling"]
    assert sampling["messages"][0]["content"]["text"] == (
        "Resource trigger-sampling-request context: say hi"
    )
    assert sampling["maxTokens"] == 20
    answer = keyward["sampled"]["content"][0]["text"]
    assert "a sampled answer" in answer and "keyward-test-model" in answer
    assert keyward["asked"]["elicitation"]
    assert any("Ada" in block.get("text", "") for block in keyward["elicited"]["content"])


# ---------------------------------------------------------------------------------------------
# The conformance suite, directly and through keyward

# The active server suite of conformance 0.1.16 and what server-everything 2026.8.31 passes of
# it directly. The others call tools, resources and prompts by the names of the suite's own
# test server (test_image_content, test://static-text, test_simple_prompt, ...), which
# server-everything does not have; or check DNS-rebinding protection, which it does not do.
SCENARIOS = [
    "server-initialize", "logging-set-level", "ping", "completion-complete", "tools-list",
    "tools-call-simple-text", "tools-call-image", "tools-call-audio",
    "tools-call-embedded-resource", "tools-call-mixed-content", "tools-call-with-logging",
    "tools-call-error", "tools-call-with-progress", "tools-call-sampling",
    "tools-call-elicitation", "elicitation-sep1034-defaults", "server-sse-multiple-streams",
    "elicitation-sep1330-enums", "resources-list", "resources-read-text",
    "resources-read-binary", "resources-templates-read", "resources-subscribe",
    "resources-unsubscribe", "prompts-list", "prompts-get-simple", "prompts-get-with-args",
    "prompts-get-embedded-resource", "prompts-get-with-image", "dns-rebinding-protection",
]
PASS_DIRECTLY = {
    "server-initialize", "logging-set-level", "ping", "tools-list", "tools-call-simple-text",
    "tools-call-error", "server-sse-multiple-streams", "resources-list", "resources-subscribe",
    "resources-unsubscribe", "prompts-list",
}
# Scenarios whose checks end differently through keyward: why, and how they end through it.
DIFFERENCES = {
    "dns-rebinding-protection": {
        "reason": "server-everything checks neither Host nor Origin, so directly the request with "
        "Host evil.example.com and its Origin is answered 200; keyward answers every Origin not "
        "in ingress.allowed_origins (none here) with 403 forbidden_origin: the rebinding request "
        "is refused, and so is the one with the localhost Origin the suite expects to be served",
        "keyward": {"localhost-host-rebinding-rejected": ["SUCCESS"],
                    "localhost-host-valid-accepted": ["FAILURE"]},
        "status": 403,
    },
}


def run_suite(directory: Path, url: str, out: Path) -> dict[str, list[dict]]:
    """The active server suite against `url`; each scenario's checks by name."""
    bin_dir = directory / "node_modules" / ".bin"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        done = subprocess.run(
            [str(bin_dir / "conformance"), "server", "--url", url, "-o", str(out)],
            env=env, cwd=directory, capture_output=True, text=True, timeout=SUITE_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the conformance suite took over {SUITE_TIMEOUT}s against {url}")
    checks = {}
    for run_dir in sorted(out.iterdir()):
        match = re.match(r"^server-(.+)-\d{4}-\d{2}-\d{2}T", run_dir.name)
        if match and (run_dir / "checks.json").exists():
            checks[match.group(1)] = json.loads((run_dir / "checks.json").read_text())
    if not checks:
        pytest.fail(f"the conformance suite produced no results against {url}:\n"
                    f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return checks


@pytest.fixture(scope="module")
def suite_runs(everything, hop, tmp_path_factory):
    """The suite against server-everything directly, then through the header hop and keyward."""
    directory = install("conformance").wait()
    direct = run_suite(directory, everything.url, tmp_path_factory.mktemp("conformance-direct"))
    before = hop.requests
    through = run_suite(
        directory, f"http://{hop.addr}/mcp", tmp_path_factory.mktemp("conformance-keyward")
    )
    assert hop.requests - before > len(SCENARIOS)
    return {"direct": direct, "keyward": through}


def outcome(checks: list[dict]) -> dict[str, list[str]]:
    """Each check's statuses by check id (a scenario may repeat an id)."""
    statuses: dict[str, list[str]] = {}
    for check in checks:
        statuses.setdefault(check.get("id"), []).append(check.get("status"))
    return statuses


def passed(checks: list[dict]) -> bool:
    return bool(checks) and not any(c.get("status") == "FAILURE" for c in checks)


@pytest.mark.conformance
def test_conformance_directly(suite_runs):
    direct = suite_runs["direct"]
    assert sorted(direct) == sorted(SCENARIOS)
    assert {name for name, checks in direct.items() if passed(checks)} == PASS_DIRECTLY


@pytest.mark.conformance
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_conformance_through_keyward(suite_runs, scenario):
    direct = suite_runs["direct"].get(scenario)
    through = suite_runs["keyward"].get(scenario)
    assert through is not None, f"{scenario} did not run through keyward"
    if scenario in DIFFERENCES:
        difference = DIFFERENCES[scenario]
        assert outcome(through) != outcome(direct), f"{scenario} no longer differs: remove it"
        assert outcome(through) == difference["keyward"], difference["reason"]
        statuses = {c.get("details", {}).get("statusCode") for c in through}
        assert statuses == {difference["status"]}, difference["reason"]
        return
    failed = [f"{c.get('id')}: {c.get('errorMessage', '')}" for c in through
              if c.get("status") == "FAILURE"]
    if passed(direct):
        assert not failed, failed
    assert outcome(through) == outcome(direct)


@pytest.mark.conformance
def test_conformance_package_has_no_reference_server():
    """The suite's own reference server (examples/servers/typescript/everything-server.ts in
    its repository) is not in the npm package, which holds only the bundled CLI: the suite
    runs against server-everything instead. When a pinned version ships one, run it here."""
    modules = install("conformance").wait() / "node_modules"
    package = modules / "@modelcontextprotocol" / "conformance"
    files = sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file())
    assert files == ["LICENSE", "README.md", "dist/index.js", "package.json"], files


# ---------------------------------------------------------------------------------------------
# The MCP Inspector's CLI


def inspector(
    npm_dir: Path, home: Path, url: str, *extra: str, env: dict[str, str] | None = None,
    terminal: bool = False,
) -> subprocess.CompletedProcess:
    """`inspector --cli URL --transport http --method tools/list EXTRA...`. `terminal`: its stdin
    is a pseudo-terminal (as for someone at a shell; its stdout and stderr are still captured),
    which is what lets it start an interactive OAuth flow."""
    bin_dir = npm_dir / "node_modules" / ".bin"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        # Its catalog and state go to a directory of the test's, not the user's home; secrets
        # (OAuth tokens, client registrations) to memory, never to the session's keychain.
        "HOME": str(home),
        "MCP_CATALOG_PATH": str(home / "catalog.json"),
        "MCP_INSPECTOR_SECRET_STORE": "memory",
        "NO_COLOR": "1",
        **(env or {}),
    }
    argv = [str(bin_dir / "inspector"), "--cli", url, "--transport", "http",
            "--method", "tools/list", *extra]
    if not terminal:
        return subprocess.run(
            argv, env=env, cwd=home, capture_output=True, text=True, timeout=CLI_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    controller, stdin = pty.openpty()
    try:
        return subprocess.run(
            argv, env=env, cwd=home, capture_output=True, text=True, timeout=CLI_TIMEOUT,
            stdin=stdin,
        )
    finally:
        os.close(stdin)
        os.close(controller)


def test_inspector_cli_lists_the_tools_through_keyward(npm_dir, everything, sidecar, tmp_path):
    direct = inspector(npm_dir, tmp_path, everything.url)
    assert direct.returncode == 0, direct.stderr[-2000:]
    key = sidecar.client_key()
    through = inspector(npm_dir, tmp_path, sidecar.mcp_url, "--header", f"X-Api-Key: {key}")
    assert through.returncode == 0, through.stderr[-2000:]
    assert json.loads(through.stdout) == json.loads(direct.stdout)
    names = [tool["name"] for tool in json.loads(through.stdout)["tools"]]
    assert {"echo", "get-sum", "trigger-long-running-operation"} <= set(names)
    assert not any(form in through.stdout + through.stderr for form in podlib.secret_forms(key))


def keyward_log_from(sidecar, offset: int, last: tuple[str, str]) -> tuple[list, list]:
    """keyward's access lines (method, path, status) and audit lines (decision, reason, path)
    written after `offset` characters of its log, once the access line for `last` (method,
    path), the request the client made last, is there."""
    deadline = time.monotonic() + 5
    while True:
        text = sidecar.logs("keyward")["keyward"][offset:]
        events = [podlib._json_line(line) for line in text.splitlines(keepends=True)
                  if line.endswith("\n")]
        events = [event for event in events if event]
        access = [(e.get("method"), e.get("path"), e.get("status"))
                  for e in events if e.get("target") == "keyward::access"]
        audit = [(e.get("decision"), e.get("reason"), e.get("path"))
                 for e in events if e.get("target") == "keyward::audit"]
        if any(request[:2] == last for request in access) or time.monotonic() > deadline:
            return access, audit
        time.sleep(0.05)


def envelope(done: subprocess.CompletedProcess) -> dict:
    """The Inspector's error envelope: the last line of its stderr, as JSON."""
    lines = done.stderr.strip().splitlines()
    assert lines, f"exit {done.returncode}, no stderr; stdout: {done.stdout[-2000:]}"
    return json.loads(lines[-1])


# What the Inspector 2.12.0 CLI says, without a terminal, when the MCP endpoint answers 401.
NEEDS_A_TERMINAL = (
    "Interactive OAuth requires a TTY on stdin or stderr (or MCP_AUTO_OPEN_ENABLED=true). "
    "For CI/non-interactive runs use --stored-auth-only."
)
# The discovery it makes, through the SDK (@modelcontextprotocol/client 2.3.1), when it can
# start OAuth: RFC 9728 protected-resource metadata (path-aware, then at the root), then RFC
# 8414 and OpenID Connect metadata with the MCP server's origin as the authorization server.
DISCOVERY = {
    "/.well-known/oauth-protected-resource/mcp",
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
}


@pytest.mark.parametrize("key", [None, WRONG_KEY], ids=["no-key", "wrong-key"])
def test_inspector_cli_without_a_valid_key(npm_dir, sidecar, tmp_path, key):
    """What the Inspector's CLI tells its user when keyward refuses it, in its three ways of
    meeting a 401, and what it asked keyward for. It takes any 401 from the MCP endpoint for
    an OAuth challenge, whatever the WWW-Authenticate scheme (keyward's is ApiKey), and:

    - without a terminal (CI, and the default here) stops before any discovery with a message
      about TTYs and OAuth that says nothing of keyward's answer: misleading, but keyward can
      do nothing about it, its body never reaches the message;
    - with --stored-auth-only stops there too, with the transport's error, which carries
      keyward's body: the clear one;
    - at a terminal runs OAuth discovery, which keyward answers 404 without asking for a key
      and without counting a failed key check; the SDK then falls back to registering a client
      at /register on the server's origin, a path keyward guards like any other: 401, a
      failed key check, and the message names Dynamic Client Registration but carries
      keyward's body.
    """
    extra = ("--header", f"X-Api-Key: {key}") if key else ()
    refusal = "invalid" if key else "missing"
    secrets = [form for value in sidecar.secret_values() for form in podlib.secret_forms(value)]

    def run_inspector(home: str, *more: str, **options):
        (tmp_path / home).mkdir()
        offset = len(sidecar.logs("keyward")["keyward"])
        done = inspector(npm_dir, tmp_path / home, sidecar.mcp_url, *extra, *more, **options)
        last = ("POST", "/register") if options.get("terminal") else ("POST", "/mcp")
        access, audit = keyward_log_from(sidecar, offset, last)
        said = done.stdout + done.stderr
        assert done.returncode == 3, said[-2000:]  # its AUTH_REQUIRED
        assert done.stdout == ""
        assert WRONG_KEY not in said and not any(form in said for form in secrets)
        return envelope(done)["error"], access, audit

    # No terminal: one request, one failed key check, and a message about OAuth and TTYs.
    error, access, audit = run_inspector("plain")
    assert error == {"code": "auth_required", "message": NEEDS_A_TERMINAL}
    assert access == [("POST", "/mcp", 401)]
    assert audit == [("deny", refusal, "/mcp")]

    # --stored-auth-only: keyward's refusal, as keyward wrote it.
    error, access, audit = run_inspector("stored", "--stored-auth-only")
    assert error["code"] == "auth_required"
    prefix = "Error POSTing to endpoint: "
    assert error["message"].startswith(prefix), error
    assert json.loads(error["message"][len(prefix):]) == UNAUTHORIZED
    assert access == [("POST", "/mcp", 401)]
    assert audit == [("deny", refusal, "/mcp")]

    # At a terminal (auto-open off: no browser, and no stdin is read on this path).
    error, access, audit = run_inspector(
        "terminal", env={"MCP_AUTO_OPEN_ENABLED": "false"}, terminal=True
    )
    assert error["code"] == "auth_required" and error["status"] == 401, error
    prefix = "Dynamic Client Registration rejected (HTTP 401): "
    assert error["message"].startswith(prefix), error
    assert json.loads(error["message"][len(prefix):]) == UNAUTHORIZED
    assert access[0] == ("POST", "/mcp", 401)
    assert access[-1] == ("POST", "/register", 401)
    discovery = access[1:-1]
    assert {path for _, path, _ in discovery} == DISCOVERY, access
    assert all(method == "GET" and status == 404 for method, _, status in discovery), access
    # The discovery was not checked for a key. /register is refused for a missing key even
    # with a wrong one: the Inspector does not send its --header to the registration endpoint.
    assert audit == [("deny", refusal, "/mcp"), ("deny", "missing", "/register")]
