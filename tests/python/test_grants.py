"""Per-client grants and session binding, black-box through the real binaries on 127.0.0.1.

Grants: `[[ingress.clients]]` carries `tools` (names and `*` globs; absent: every tool, `[]`:
none), `resources` and `prompts`. For a client with grants keyward reads each POSTed JSON-RPC
body: a `tools/call` it may not make is answered by keyward (HTTP 200, JSON-RPC error -32602)
and never reaches the backend; `tools/list` answers reach it with the granted tools only; a
batch is checked element by element; `Mcp-Method`/`Mcp-Name` headers must match the body
(else 400, -32020); a body that is not JSON is 400, -32700.

    official MCP Python client / raw httpx --X-Api-Key--> keyward --> recording hop
        --> mcp-backend (stateless; SSE answers, or application/json with --json-response)

The hop (recording_backend.py) records every request's headers and body, so "the backend
never saw it" is an assertion on what keyward forwarded, per client (X-Keyward-Client).

Sessions: with `mcp-backend --stateful`, the backend's `Mcp-Session-Id: X` reaches the client
as `X.<mac>`, a MAC over the client and X keyed by `ingress.session_secret`. Another client
presenting it gets 404, and so does the bare X; a second keyward reading the same secrets
directory with the same `session_secret` accepts it from the same client.
"""

from __future__ import annotations

import httpx
import pytest
from mcp.shared.exceptions import McpError

import pod as podlib
from grants_support import (
    ACCEPT,
    ACTIVITY,
    DAY,
    HEADER_MISMATCH,
    HTTP_TIMEOUT,
    INITIALIZE,
    INITIALIZED,
    MIXED,
    NOT_PERMITTED,
    NOTHING,
    OTHER,
    PARSE_ERROR,
    PROTOCOL,
    SESSION_SECRET,
    GrantsPod,
    SessionPods,
    answer_to,
    called_tools,
    forwarded,
    headers,
    leaks,
    messages,
    post,
    rpc,
    sent_by,
    tool_call,
    tool_names,
)
from mcp_calls import TOOLS, json_of, mcp_session, run, text_of

ACTIVITY_TOOLS = {"get_activity_by_date", "get_activity_by_date_range", "get_activity_records"}


@pytest.fixture(scope="module", params=["sse", "json"])
def grants(bins, tmp_path_factory, request):
    """The grants pod, once with the backend answering in SSE (its default) and once with
    `--json-response` (application/json): keyward must filter and deny in both."""
    directory = tmp_path_factory.mktemp(f"grants-{request.param}")
    with GrantsPod(bins, directory, mode=request.param) as setup:
        yield setup


@pytest.fixture(scope="module")
def sessions(bins, tmp_path_factory):
    """The stateful backend behind keyward #1 (the pod) and keyward #2 (a second replica)."""
    with SessionPods(bins, tmp_path_factory.mktemp("sessions")) as setup:
        yield setup


def assert_not_permitted(answer: dict, id_: int) -> None:
    assert answer == {"jsonrpc": "2.0", "id": id_, "error": NOT_PERMITTED}, answer


# ---------------------------------------------------------------------------------------------
# tools/list and tools/call with the official client


def test_a_client_granted_activity_tools_sees_calls_and_is_denied_the_rest(grants):
    """`tools = ["get_activity_*"]`: the official client lists exactly the three activity
    tools, gets data from get_activity_by_date, and gets JSON-RPC error -32602 "tool not
    permitted for this client" for get_sleep_by_date, a call keyward answers itself: the
    backend receives the activity call and never the sleep one. A raw tools/list shows the
    answer keeps the backend's shape (application/json with --json-response, SSE without)."""
    before = len(grants.recorder.snapshot())

    async def session():
        async with mcp_session(grants.pod.mcp_url, grants.official_headers(ACTIVITY)) as (
            client, _,
        ):
            tools = (await client.list_tools()).tools
            allowed = await client.call_tool("get_activity_by_date", {"date": DAY})
            with pytest.raises(McpError) as denied:
                await client.call_tool("get_sleep_by_date", {"date": DAY})
            return tools, allowed, denied.value.error

    tools, allowed, denied = run(session())
    assert {tool.name for tool in tools} == ACTIVITY_TOOLS
    assert len(tools) == 3
    assert allowed.isError is False, text_of(allowed)
    assert (json_of(allowed)["Date"], json_of(allowed)["DocumentType"]) == (DAY, "Activity")
    assert (denied.code, denied.message) == (NOT_PERMITTED["code"], NOT_PERMITTED["message"])

    reply = post(grants.pod.mcp_url, grants.key(ACTIVITY), rpc(7, "tools/list"))
    assert reply.status_code == 200, reply.text
    shape = "application/json" if grants.mode == "json" else "text/event-stream"
    assert reply.headers["content-type"].startswith(shape), reply.headers["content-type"]
    assert tool_names(answer_to(reply, 7)) == ACTIVITY_TOOLS

    seen = sent_by(grants.recorder.snapshot()[before:], ACTIVITY.id)
    assert called_tools(seen) == ["get_activity_by_date"]


def test_a_client_without_grants_sees_and_calls_every_tool(grants):
    """The pod's own client has no `tools` key: it lists all twelve tools and its call of a
    tool the activity client may not make reaches the backend and returns data."""
    before = len(grants.recorder.snapshot())

    async def session():
        async with mcp_session(grants.pod.mcp_url, grants.official_headers()) as (client, _):
            tools = (await client.list_tools()).tools
            return tools, await client.call_tool("get_sleep_by_date", {"date": DAY})

    tools, result = run(session())
    assert {tool.name for tool in tools} == TOOLS
    assert len(tools) == 12
    assert result.isError is False, text_of(result)
    assert json_of(result)["DocumentType"] == "Sleep"
    seen = sent_by(grants.recorder.snapshot()[before:], podlib.CLIENT_ID)
    assert called_tools(seen) == ["get_sleep_by_date"]


def test_a_client_granted_no_tools_lists_none_and_calls_none(grants):
    """`tools = []` (and `resources = []`, `prompts = []`): initialize still works, tools/list
    comes back empty, and every tools/call is keyward's -32602; none reaches the backend."""
    before = len(grants.recorder.snapshot())

    async def session():
        async with mcp_session(grants.pod.mcp_url, grants.official_headers(NOTHING)) as (
            client, init,
        ):
            tools = (await client.list_tools()).tools
            with pytest.raises(McpError) as denied:
                await client.call_tool("get_activity_by_date", {"date": DAY})
            return init, tools, denied.value.error

    init, tools, denied = run(session())
    assert init.serverInfo.name == "mcp-backend"
    assert tools == []
    assert denied.code == NOT_PERMITTED["code"], denied
    assert called_tools(sent_by(grants.recorder.snapshot()[before:], NOTHING.id)) == []


def test_names_and_globs_combine(grants):
    """`tools = ["get_activity_*", "get_sleep_by_date"]`: the three activity tools and that one
    sleep tool are listed and callable; get_sleep_records (same prefix, not granted) is not."""
    before = len(grants.recorder.snapshot())
    url, key = grants.pod.mcp_url, grants.key(MIXED)

    listed = post(url, key, rpc(1, "tools/list"))
    assert listed.status_code == 200, listed.text
    assert tool_names(answer_to(listed, 1)) == ACTIVITY_TOOLS | {"get_sleep_by_date"}

    allowed = post(url, key, tool_call(2, "get_sleep_by_date", {"date": DAY}))
    assert allowed.status_code == 200, allowed.text
    assert answer_to(allowed, 2)["result"]["isError"] is False, allowed.text

    denied = post(url, key, tool_call(3, "get_sleep_records"))
    assert denied.status_code == 200, denied.text
    assert denied.headers["content-type"].startswith("application/json")
    assert_not_permitted(denied.json(), 3)
    assert called_tools(sent_by(grants.recorder.snapshot()[before:], MIXED.id)) == [
        "get_sleep_by_date"
    ]


# ---------------------------------------------------------------------------------------------
# Batches, headers, malformed bodies (raw HTTP)


def test_a_batch_is_checked_element_by_element(grants):
    """A JSON-RPC batch with one allowed and one denied tools/call: keyward forwards the
    allowed element (as a batch) and adds its own -32602 error for the denied one to the
    answer; the backend never sees the denied call.

    rmcp 3.9 (mcp-backend) does not take batches: it answers any JSON array with HTTP 415 and
    a plain-text body, and keyward passes that answer on as it is (it adds its errors to a
    JSON or SSE answer, and a 415 for the batch is true of the batch). So this asserts what was
    forwarded, and keyward's error for the denied element whenever the answer is JSON-RPC."""
    before = len(grants.recorder.snapshot())
    batch = [
        tool_call(11, "get_activity_by_date", {"date": DAY}),
        tool_call(12, "get_sleep_by_date", {"date": DAY}),
    ]
    reply = post(grants.pod.mcp_url, grants.key(ACTIVITY), batch)

    content_type = reply.headers.get("content-type", "")
    if content_type.startswith(("application/json", "text/event-stream")):
        assert_not_permitted(answer_to(reply, 12), 12)
    else:
        assert reply.status_code == 415, (reply.status_code, content_type)
    allowed = [m for m in messages(reply) if m.get("id") == 11]
    if allowed and "result" in allowed[0]:
        assert allowed[0]["result"]["isError"] is False, allowed
    seen = [r for r in sent_by(grants.recorder.snapshot()[before:], ACTIVITY.id) if r.body]
    assert len(seen) == 1, [r.body for r in seen]
    assert seen[0].body.lstrip().startswith(b"["), "the allowed elements go on as a batch"
    assert [(m["id"], m["params"]["name"]) for m in forwarded(seen)] == [
        (11, "get_activity_by_date")
    ]


def test_a_batch_of_denied_calls_is_answered_by_keyward_alone(grants):
    """A batch whose every element is denied: nothing is left to forward, so keyward answers
    the whole batch itself (HTTP 200, a JSON array with one -32602 error per element) and the
    backend receives no request at all."""
    before = len(grants.recorder.snapshot())
    batch = [tool_call(21, "get_sleep_by_date", {"date": DAY}), tool_call(22, "get_food_records")]
    reply = post(grants.pod.mcp_url, grants.key(ACTIVITY), batch)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    answers = reply.json()
    assert isinstance(answers, list), answers
    assert sorted(answers, key=lambda m: m["id"]) == [
        {"jsonrpc": "2.0", "id": 21, "error": NOT_PERMITTED},
        {"jsonrpc": "2.0", "id": 22, "error": NOT_PERMITTED},
    ]
    assert sent_by(grants.recorder.snapshot()[before:], ACTIVITY.id) == []


@pytest.mark.parametrize(
    ("sent", "expect"),
    [
        ({"Mcp-Method": "tools/list"}, 400),
        ({"Mcp-Method": "tools/call", "Mcp-Name": "get_activity_records"}, 400),
        ({"Mcp-Method": "tools/call", "Mcp-Name": "get_activity_by_date"}, 200),
    ],
    ids=["method-contradicts-body", "name-contradicts-body", "headers-match-body"],
)
def test_mcp_headers_must_match_the_body(grants, sent, expect):
    """A tools/call of get_activity_by_date (a granted tool) from the activity client, with
    `Mcp-Method`/`Mcp-Name` headers: when they contradict the body keyward answers HTTP 400
    with JSON-RPC error -32020 and forwards nothing (a router trusting the headers would see
    another call than the backend runs); when they match, the call goes through."""
    before = len(grants.recorder.snapshot())
    body = tool_call(31, "get_activity_by_date", {"date": DAY})
    reply = post(grants.pod.mcp_url, grants.key(ACTIVITY), body, extra=sent)
    assert reply.status_code == expect, reply.text
    seen = called_tools(sent_by(grants.recorder.snapshot()[before:], ACTIVITY.id))
    if expect == 400:
        assert reply.headers["content-type"].startswith("application/json")
        answer = reply.json()
        assert answer["jsonrpc"] == "2.0" and answer["error"]["code"] == HEADER_MISMATCH, answer
        assert answer.get("id") in (31, None), answer
        assert seen == []
    else:
        assert answer_to(reply, 31)["result"]["isError"] is False, reply.text
        assert seen == ["get_activity_by_date"]


def test_malformed_json_from_a_granted_client_is_a_parse_error(grants):
    """A body that is not JSON from a client with grants: keyward cannot check it, so it
    answers HTTP 400 with JSON-RPC error -32700 and id null, and forwards nothing."""
    before = len(grants.recorder.snapshot())
    reply = post(
        grants.pod.mcp_url, grants.key(ACTIVITY),
        content=b'{"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": {',
    )
    assert reply.status_code == 400, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    answer = reply.json()
    assert answer["jsonrpc"] == "2.0" and answer["id"] is None, answer
    assert answer["error"]["code"] == PARSE_ERROR, answer
    assert sent_by(grants.recorder.snapshot()[before:], ACTIVITY.id) == []


def test_no_output_of_the_grants_pod_carries_a_key(grants):
    """After the tests above (grants granted and denied, batches, bad headers, bad JSON), no
    process's output, the stand-in's record or the hop's record holds any form of a key."""
    texts = grants.pod.logs()
    texts["the stand-in's record"] = grants.pod.state.record.read_text()
    texts["the hop's record"] = "\n".join(
        f"{r.headers!r} {r.body!r}" for r in grants.recorder.snapshot()
    )
    assert {"keyward", "mcp-backend"} <= set(texts)
    assert leaks([grants.pod], texts) == []


# ---------------------------------------------------------------------------------------------
# Sessions bound to their client (mcp-backend --stateful)


def _get_status(url: str, key: str, session: str) -> tuple[int, str]:
    """GET (the session's SSE stream): status and content type; the stream is not read."""
    with httpx.stream(
        "GET", url, headers={**headers(key, session), "Accept": "text/event-stream"},
        timeout=HTTP_TIMEOUT,
    ) as reply:
        return reply.status_code, reply.headers.get("content-type", "")


def _delete(url: str, key: str, session: str) -> httpx.Response:
    return httpx.delete(url, headers=headers(key, session), timeout=HTTP_TIMEOUT)


def test_a_session_is_bound_to_the_client_that_opened_it(sessions):
    """Client A (the pod's own) opens a session through keyward #1 and gets `X.<mac>`. Client B
    (OTHER, a valid key of its own) presenting it gets 404 on POST, GET and DELETE; A's session
    still works afterwards (B's DELETE never reached the backend). The bare backend id X is
    404 for A too. Through keyward #2 (same secrets directory, same session_secret) A's session
    works. A's DELETE ends it; after that the id is the backend's unknown session (404)."""
    first, second = sessions.pod.mcp_url, sessions.second.mcp_url
    a, b = sessions.key(), sessions.key(OTHER)
    session = sessions.open_session(first, a)
    raw, dot, mac = session.rpartition(".")
    assert raw and dot and mac, "the session id has no `.<mac>` part"

    listed = post(first, a, rpc(2, "tools/list"), session=session)
    assert listed.status_code == 200, listed.text
    assert tool_names(answer_to(listed, 2)) == TOOLS

    replayed = post(first, b, rpc(3, "tools/list"), session=session)
    assert replayed.status_code == 404, replayed.text
    assert "tools" not in replayed.text
    assert _get_status(first, b, session)[0] == 404
    assert _delete(first, b, session).status_code == 404

    again = post(first, a, rpc(4, "tools/list"), session=session)
    assert again.status_code == 200, again.text
    status, kind = _get_status(first, a, session)
    assert (status, kind.split(";")[0]) == (200, "text/event-stream")

    for url in (first, second):
        bare = post(url, a, rpc(5, "tools/list"), session=raw)
        assert bare.status_code == 404, (url, bare.text)

    replica = post(second, a, tool_call(6, "get_activity_by_date", {"date": DAY}), session=session)
    assert replica.status_code == 200, replica.text
    assert answer_to(replica, 6)["result"]["isError"] is False, replica.text
    assert post(second, b, rpc(7, "tools/list"), session=session).status_code == 404

    ended = _delete(second, a, session)
    assert ended.status_code in (200, 202, 204), ended.text
    gone = post(first, a, rpc(8, "tools/list"), session=session)
    assert gone.status_code == 404, gone.text


def test_without_a_shared_session_secret_another_keyward_does_not_know_the_session(
    sessions, tmp_path
):
    """A third keyward with the same secrets and clients but no `session_secret` draws its own
    MAC key: the session A opened through keyward #1 is an unknown session there (404), while
    it still works through keyward #1. What makes replicas agree is the shared secret."""
    a = sessions.key()
    session = sessions.open_session(sessions.pod.mcp_url, a)
    with sessions.replica(tmp_path / "lone", None) as lone:
        elsewhere = post(lone.mcp_url, a, rpc(2, "tools/list"), session=session)
        assert elsewhere.status_code == 404, elsewhere.text
    home = post(sessions.pod.mcp_url, a, rpc(3, "tools/list"), session=session)
    assert home.status_code == 200, home.text
    assert _delete(sessions.pod.mcp_url, a, session).status_code in (200, 202, 204)


def test_the_official_client_keeps_its_bound_session(sessions):
    """The official client against the stateful backend through keyward: it stores the
    `X.<mac>` id from initialize, sends it back on every request (and DELETEs it on exit), and
    lists and calls tools as usual."""

    async def session():
        async with mcp_session(sessions.pod.mcp_url, {"X-Api-Key": sessions.key(OTHER)}) as (
            client, init,
        ):
            tools = (await client.list_tools()).tools
            return init, tools, await client.call_tool("get_food_by_date", {"date": DAY})

    init, tools, result = run(session())
    assert init.serverInfo.name == "mcp-backend"
    assert {tool.name for tool in tools} == TOOLS
    assert result.isError is False, text_of(result)
    assert json_of(result)["DocumentType"] == "Food"


def test_initialize_without_keyward_is_a_plain_rmcp_session(sessions):
    """The stateful backend alone (no keyward): initialize issues a bare id, which a request
    must carry (400 without it), and an id the backend never issued is 404. This is the
    behaviour keyward's binding sits on, checked so that a failure above is not the backend's."""
    backend = sessions.pod.backend_url
    plain = {"Accept": ACCEPT, "MCP-Protocol-Version": PROTOCOL}

    def send(body: dict, session: str | None = None) -> httpx.Response:
        sent = {**plain, "Mcp-Session-Id": session} if session else plain
        return httpx.post(backend, json=body, headers=sent, timeout=HTTP_TIMEOUT)

    reply = send(INITIALIZE)
    assert reply.status_code == 200, reply.text
    session = reply.headers["mcp-session-id"]
    assert "." not in session
    assert send(INITIALIZED, session).status_code == 202
    missing = send(rpc(2, "tools/list"))
    assert missing.status_code == 400, missing.text
    unknown = send(rpc(3, "tools/list"), session + "x")
    assert unknown.status_code == 404, unknown.text
    listed = send(rpc(4, "tools/list"), session)
    assert tool_names(answer_to(listed, 4)) == TOOLS
    ended = httpx.delete(
        backend, headers={**plain, "Mcp-Session-Id": session}, timeout=HTTP_TIMEOUT
    )
    assert ended.status_code == 202, ended.text
    assert send(rpc(5, "tools/list"), session).status_code == 404


def test_no_output_of_the_session_pods_carries_a_key(sessions):
    """After the session tests, neither keyward's output (nor the backend's, nor the
    stand-in's) holds any form of a client key or of the session secret, and the two keywards'
    configs name the session secret without its value."""
    texts = {f"#1 {name}": text for name, text in sessions.pod.logs().items()}
    texts.update({f"#2 {name}": text for name, text in sessions.second.logs().items()})
    for name, setup in (("#1", sessions.pod), ("#2", sessions.second)):
        config = setup.state.config.read_text()
        assert f'session_secret = "{SESSION_SECRET}"' in config, name
        texts[f"{name} keyward.toml"] = config
    assert leaks([sessions.pod], texts) == []
