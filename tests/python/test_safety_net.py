"""Black-box tests of keyward's safety net with the whole pod and the official MCP Python client.

    MCP client --X-Api-Key--> keyward ingress --> mcp-backend --> keyward egress --> health-api
                  (net)                                           (net)             (leaking)

The stand-in is made to leak (`--leak MODE`, or `POST /_leak` on its own port): the
subscription key keyward adds echoed back, base64-encoded, split across two chunks or
gzip-compressed; or a client key inside a record. Whatever the mode, no form of any secret
reaches the client, the backend's logs or anything else the test can read; the net says what
it caught in /metrics and the audit log, by secret name. Raw requests play the backend when the
test needs to send what mcp-backend never would.
"""

from __future__ import annotations

import base64
import gzip
import json
import time

import httpx
import pytest

import pod as podlib
import safety_support as net
from mcp_calls import json_of, statuses_in, text_of

APIM = podlib.APIM_SECRET
CLIENT = podlib.CLIENT_SECRET
TOOL = ("get_activity_by_date", {"date": net.DAY})
PATH = f"/biotrackr/activity/{net.DAY}"


@pytest.fixture(scope="module")
def netpod(bins, tmp_path_factory):
    """keyward's defaults (redact on both listeners); the stand-in can leak the client key."""
    with podlib.Pod(
        tmp_path_factory.mktemp("safety"), ports="auto", bins=bins, leak_value_secret=CLIENT
    ) as running:
        yield running


@pytest.fixture()
def leaking(netpod):
    """The shared pod, its stand-in's leak mode set by the test and put back to none after."""
    net.set_leak(netpod, "none")
    yield netpod
    net.set_leak(netpod, "none")


def without_leak(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("Sync", "headers")}


def assert_logs_clean(pod) -> None:
    logs = pod.logs()
    assert {"keyward", "mcp-backend", "health-api"} <= set(logs)
    net.assert_clean(pod, {f"{name}'s output": text for name, text in logs.items()})
    net.assert_clean(pod, {"the stand-in's record": pod.state.record.read_text()})


# ---------------------------------------------------------------------------------------------
# The stand-in leaks for real (asked directly, not through keyward): the tests below are not
# vacuous.


@pytest.mark.parametrize("mode", net.MODES)
def test_the_stand_in_really_leaks_in_each_mode(leaking, mode):
    pod = leaking
    apim, client = pod.state.secret(APIM), pod.client_key()
    normal = net.direct_get(pod, PATH)
    assert normal.status_code == 200 and "Sync" not in normal.json()
    net.set_leak(pod, mode)
    assert net.leak_mode(pod) == mode

    if mode == "split":
        status, headers, chunks = net.raw_get(pod.standin_addr, PATH, (
            ("Ocp-Apim-Subscription-Key", apim),
        ))
        assert status == 200
        whole = b"".join(chunks)
        carried = json.loads(whole)["Sync"]["subscriptionKey"] == apim
        assert carried
        in_one_chunk = any(apim.encode() in chunk for chunk in chunks)
        assert len(chunks) == 2 and not in_one_chunk, "the key must straddle two chunks"
        return

    if mode == "gzip":
        # By hand: the member as it crosses the wire, which httpx would inflate.
        status, headers, chunks = net.raw_get(pod.standin_addr, PATH, (
            ("Ocp-Apim-Subscription-Key", apim),
        ))
        assert status == 200 and {n.lower(): v for n, v in headers}["content-encoding"] == "gzip"
        compressed = b"".join(chunks)
        plain = gzip.decompress(compressed)
        carried = apim.encode() in plain
        readable = net.holds(compressed, net.forms(apim))
        assert carried and not readable, "gzip: the key inside, no form of it on the wire"
        assert without_leak(json.loads(plain)) == normal.json()
        return
    reply = net.direct_get(pod, PATH)
    assert reply.status_code == 200
    record = reply.json()
    assert without_leak(record) == normal.json()
    if mode == "echo":
        echoed = record["headers"]["ocp-apim-subscription-key"] == apim
        assert echoed
    elif mode == "base64":
        token = base64.b64decode(record["Sync"]["token"]).decode() == apim
        basic = base64.b64decode(record["Sync"]["basic"]).decode() == f"apim:{apim}"
        assert token and basic
    else:
        carried = record["Sync"]["deviceToken"] == client
        assert carried


def _answers(addr: str, key: str) -> list:
    """Status, headers but the date, and body bytes of the stand-in's answers of each kind."""
    targets = [PATH, "/biotrackr/sleep/range/2025-03-01/2025-03-07?pageNumber=2&pageSize=3",
               "/biotrackr/food?pageSize=2", "/biotrackr/vitals/2019-01-01",
               "/biotrackr/food/2025-13-01", "/biotrackr/nothing"]
    answers = []
    for target, sent in [(t, key) for t in targets] + [(PATH, "not-the-key")]:
        status, headers, chunks = net.raw_get(addr, target, (("Ocp-Apim-Subscription-Key", sent),))
        headers = [(n.lower(), v) for n, v in headers if n.lower() != "date"]
        answers.append((target, status, headers, b"".join(chunks)))
    posted = httpx.post(f"http://{addr}{PATH}", headers={"Ocp-Apim-Subscription-Key": key})
    answers.append((posted.status_code, posted.headers.get("allow"), posted.content))
    return answers


def test_with_no_leak_mode_the_answers_are_those_of_a_stand_in_without_leak_flags(leaking, bins,
                                                                                   tmp_path):
    pod = leaking
    net.set_leak(pod, "echo")
    net.set_leak(pod, "none")
    plain = podlib.Child(
        "plain-health-api",
        [str(bins / "health-api"), "--listen", "127.0.0.1:0", "--prefix", "/biotrackr/",
         "--key-file", str(pod.state.secret_file(APIM))],
        tmp_path / "plain-health-api.log", podlib._child_env(),
    )
    try:
        marker = "health-api listening on "
        addr = plain.wait_line(lambda line: line.split(marker, 1)[1].strip()
                               if marker in line else None)
        key = pod.state.secret(APIM)
        expected = _answers(addr, key)
        assert [a[1] for a in expected[:-1]] == [200, 200, 200, 404, 400, 404, 401]
        assert _answers(pod.standin_addr, key) == expected
    finally:
        plain.terminate()
        plain.reap(time.monotonic() + podlib.STOP_TIMEOUT)
    assert all("leak" not in r for r in pod.recorded_requests()[-8:])


# ---------------------------------------------------------------------------------------------
# No false positive


def test_all_twelve_tools_answer_unchanged_and_nothing_is_counted(leaking):
    pod = leaking
    before = net.leak_counts(pod)
    calls = net.every_tool_call()
    results = net.call_tools(pod, calls)
    assert len(results) == 12
    for (name, args), result in zip(calls, results):
        assert result.isError is False, (name, text_of(result))
        text = text_of(result)
        assert net.REDACTED not in text, name
        direct = net.direct_get(pod, net.standin_path(name, args))
        assert direct.status_code == 200, name
        assert json.loads(text) == direct.json(), f"{name} changed on its way"
    assert net.grew(before, net.leak_counts(pod)) == {}
    assert net.leak_counts(pod) == before
    assert_logs_clean(pod)


# ---------------------------------------------------------------------------------------------
# Egress catches the subscription key coming back, in each form


def test_an_echoed_key_reaches_the_client_only_as_a_redaction(leaking):
    pod = leaking
    baseline = json_of(net.call_tool(pod, *TOOL))
    before = net.leak_counts(pod)
    net.set_leak(pod, "echo")
    calls = [
        TOOL,
        ("get_sleep_by_date_range", {"startDate": "2025-03-01", "endDate": "2025-03-02"}),
        ("get_vitals_records", {"pageNumber": 1, "pageSize": 2}),
    ]
    results = net.call_tools(pod, calls)
    for result in results:
        assert result.isError is False, text_of(result)
        net.assert_clean(pod, {"a tool result": text_of(result)})
        headers = json_of(result)["headers"]
        redacted = headers["ocp-apim-subscription-key"] == net.REDACTED
        assert redacted, "not the redaction"
        # Only the key went: the rest of the echo is intact.
        assert headers["accept"] == "application/json"
        assert not {"x-api-key", "authorization"} & set(headers)
    assert without_leak(json_of(results[0])) == baseline
    seen = pod.recorded_requests()[-3:]
    assert [r.get("leak") for r in seen] == ["echo"] * 3 and {r["status"] for r in seen} == {200}
    assert net.grew(before, net.leak_counts(pod)) == {("egress", APIM): 3}
    events = net.wait_for(lambda: net.audits(pod, "secret_in_response")) or []
    assert any(e.get("secret") == APIM and e.get("listener") == "egress" for e in events)
    assert_logs_clean(pod)


def test_a_base64_encoded_key_is_redacted_at_either_alignment(leaking):
    pod = leaking
    net.set_leak(pod, "base64")
    before = net.leak_counts(pod)
    result = net.call_tool(pod, *TOOL)
    assert result.isError is False, text_of(result)
    net.assert_clean(pod, {"a tool result": text_of(result)})
    sync = json_of(result)["Sync"]
    redacted = net.REDACTED in sync["token"] and net.REDACTED in sync["basic"]
    assert redacted, "a base64 form is not redacted"
    # "apim:" is not the key: what only it determines is left.
    assert sync["basic"].startswith("YXBpbT")
    assert net.grew(before, net.leak_counts(pod)) == {("egress", APIM): 2}
    assert_logs_clean(pod)


def test_a_key_split_across_two_chunks_is_redacted_whole(leaking):
    pod = leaking
    net.set_leak(pod, "split")
    before = net.leak_counts(pod)
    result = net.call_tool(pod, *TOOL)
    assert result.isError is False, text_of(result)
    net.assert_clean(pod, {"a tool result": text_of(result)})
    redacted = json_of(result)["Sync"] == {"subscriptionKey": net.REDACTED}
    assert redacted, "not the redaction"

    # The backend's view, played by hand: the answer still streams, chunked, redacted.
    status, headers, chunks = net.raw_get(pod.egress, f"/health/activity/{net.DAY}")
    assert status == 200
    body = b"".join(chunks)
    net.assert_clean(pod, {"the egress answer": body})
    redacted = json.loads(body)["Sync"] == {"subscriptionKey": net.REDACTED}
    assert redacted, "not the redaction"
    assert net.grew(before, net.leak_counts(pod)) == {("egress", APIM): 2}
    assert_logs_clean(pod)


def test_a_compressed_answer_is_an_upstream_error_for_the_tool(leaking):
    pod = leaking
    net.set_leak(pod, "gzip")
    before = net.leak_counts(pod)
    result = net.call_tool(pod, *TOOL)
    assert result.isError is True
    assert json_of(result) == {"error": "the health-data API answered 502 Bad Gateway"}
    assert pod.recorded_requests()[-1].get("leak") == "gzip"

    reply = httpx.get(f"http://{pod.egress}/health/activity/{net.DAY}",
                      headers={"Accept-Encoding": "gzip"}, timeout=net.HTTP)
    assert reply.status_code == 502
    assert reply.json()["error"] == "unscannable_response"
    assert "content-encoding" not in reply.headers
    net.assert_clean(pod, {"the 502": reply.text + str(reply.headers)})
    # Nothing was read, so nothing was found: an unscannable answer is not a leak count.
    assert net.grew(before, net.leak_counts(pod)) == {}
    assert_logs_clean(pod)


# ---------------------------------------------------------------------------------------------
# A client key in a tool result


def test_a_client_key_from_an_upstream_is_caught_on_egress_first(leaking):
    """With both nets on, the client key never reaches the backend: egress redacts it."""
    pod = leaking
    net.set_leak(pod, "client-key")
    before = net.leak_counts(pod)
    result = net.call_tool(pod, *TOOL)
    assert result.isError is False, text_of(result)
    net.assert_clean(pod, {"a tool result": text_of(result)})
    redacted = json_of(result)["Sync"] == {"deviceToken": net.REDACTED}
    assert redacted, "not the redaction"
    assert net.grew(before, net.leak_counts(pod)) == {("egress", CLIENT): 1}
    assert_logs_clean(pod)


@pytest.mark.parametrize("backend_flags", [(), ("--json-response",)], ids=["sse", "json"])
def test_a_client_key_in_a_tool_result_is_caught_on_ingress(bins, tmp_path, backend_flags):
    """Egress net off: the backend gets the client key in its record and puts it in the tool
    result; ingress redacts it on the way to the client, as an SSE event or a JSON answer."""
    with podlib.Pod(tmp_path / "pod", ports="auto", bins=bins, egress_safety_net="off",
                    leak="client-key", leak_value_secret=CLIENT,
                    backend_flags=backend_flags) as pod:
        results = net.call_tools(pod, [TOOL, ("get_food_records", {"pageSize": 1})])
        for result in results:
            assert result.isError is False, text_of(result)
            net.assert_clean(pod, {"a tool result": text_of(result)})
            redacted = json_of(result)["Sync"] == {"deviceToken": net.REDACTED}
            assert redacted, "not the redaction"
        assert net.leak_counts(pod) == {("ingress", CLIENT): 2}
        events = net.wait_for(lambda: net.audits(pod, "secret_in_response")) or []
        assert events and all(
            (e.get("listener"), e.get("secret"), e.get("place")) == ("ingress", CLIENT, "local")
            for e in events
        ), [(e.get("listener"), e.get("secret")) for e in events]
        assert_logs_clean(pod)


# ---------------------------------------------------------------------------------------------
# Block mode


def test_in_block_mode_an_echoed_key_fails_the_tool_call(bins, tmp_path):
    with podlib.Pod(tmp_path / "pod", ports="auto", bins=bins, ingress_safety_net="block",
                    egress_safety_net="block", leak="echo") as pod:
        result = net.call_tool(pod, *TOOL)
        assert result.isError is True
        assert json_of(result) == {"error": "the health-data API answered 502 Bad Gateway"}
        reply = httpx.get(f"http://{pod.egress}/health/activity/{net.DAY}", timeout=net.HTTP)
        assert reply.status_code == 502 and reply.json()["error"] == "secret_in_response"
        net.assert_clean(pod, {"the tool result": text_of(result), "the 502": reply.text})
        assert net.leak_counts(pod) == {("egress", APIM): 2}

        # A streamed answer (no length, so not read whole first) is cut where the key begins.
        net.set_leak(pod, "split")
        cut = net.call_tool(pod, *TOOL)
        assert cut.isError is True
        assert json_of(cut) == {"error": "the health-data API sent an unreadable or oversized body"}
        status, _, chunks, whole = net.raw_get_until_cut(pod.egress, f"/health/activity/{net.DAY}")
        assert status == 200 and not whole, "the stream must be cut"
        sent = b"".join(chunks)
        assert sent.startswith(b'{"Activity"') and b"subscriptionKey" in sent
        net.assert_clean(pod, {"the tool result": text_of(cut), "the cut answer": sent})
        assert net.leak_counts(pod) == {("egress", APIM): 4}
        events = net.wait_for(lambda: len(net.audits(pod, "secret_in_response")) >= 4
                              and net.audits(pod, "secret_in_response")) or []
        assert len(events) == 4 and all(e.get("decision") == "block" for e in events)
        assert_logs_clean(pod)


# keyward's last SSE event before it cuts a blocked stream is a JSON-RPC error for the id of
# the message it stopped (MCP forbids a null id: the official client could not parse one and
# would wait for its own timeout), so the tool call fails at once.


@pytest.mark.parametrize(
    "backend_flags",
    [
        pytest.param((), id="sse"),
        pytest.param(("--json-response",), id="json"),
    ],
)
def test_in_block_mode_a_client_key_in_a_tool_result_fails_the_call(bins, tmp_path,
                                                                    backend_flags):
    """Ingress blocks (egress off, so the backend has the key to pass on): the official client
    sees the call fail, promptly, and never the key."""
    with podlib.Pod(tmp_path / "pod", ports="auto", bins=bins, ingress_safety_net="block",
                    egress_safety_net="off", leak="client-key", leak_value_secret=CLIENT,
                    backend_flags=backend_flags) as pod:
        started = time.monotonic()
        seen = ""
        try:
            result = net.call_tool(pod, *TOOL, timeout=10)
        except BaseException as err:  # noqa: BLE001 - an ExceptionGroup, or the timeout
            seen = repr(err) + str(statuses_in(err))
            failed = not isinstance(err, TimeoutError)
        else:
            seen = text_of(result)
            failed = result.isError is True
        elapsed = time.monotonic() - started
        net.assert_clean(pod, {"what the client got": seen})
        assert failed, f"the call did not fail as it should (after {elapsed:.1f}s): {seen[:300]}"
        assert net.leak_counts(pod) == {("ingress", CLIENT): 1}
        assert_logs_clean(pod)


# ---------------------------------------------------------------------------------------------
# Rotation


def test_a_rotated_key_is_caught_from_the_first_call_that_carries_it(bins, tmp_path):
    with podlib.Pod(tmp_path / "pod", ports="auto", bins=bins, leak="echo") as pod:
        old = pod.state.secret(APIM)
        first = net.call_tool(pod, *TOOL)
        redacted = json_of(first)["headers"]["ocp-apim-subscription-key"] == net.REDACTED
        assert redacted, "not the redaction"
        # The new key, for keyward (its secret file) and the stand-in (the same file).
        podlib._write_private(pod.state.secret_file(APIM), podlib.new_key() + "\n")
        rotated = time.monotonic()
        seen, result = [], None
        while time.monotonic() - rotated < 15:
            result = net.call_tool(pod, *TOOL)
            seen.append(text_of(result))
            if result.isError is False:
                break
            # keyward still sends the old key: the stand-in's 401, as a tool error.
            assert json_of(result) == {"error": "the health-data API answered 401 Unauthorized"}
            time.sleep(0.2)
        took = time.monotonic() - rotated
        assert result is not None and result.isError is False, "the new key was never sent"
        # The secrets directory is watched every second: one refresh, and some slack.
        assert took < 5, f"the first good call came {took:.1f}s after the rotation"
        net.assert_clean(pod, {"a tool result": "\n".join(seen)}, old)
        redacted = json_of(result)["headers"]["ocp-apim-subscription-key"] == net.REDACTED
        assert redacted, "not the redaction"
        assert pod.recorded_requests()[-1]["status"] == 200
        counts = net.leak_counts(pod)
        assert counts == {("egress", APIM): 2}, counts
        assert_logs_clean(pod)
        net.assert_clean(pod, {"the output after rotation": "".join(pod.logs().values())}, old)


# ---------------------------------------------------------------------------------------------
# The backend trying to send a secret to an upstream (the test plays the backend)


def test_the_backend_cannot_send_a_client_key_to_an_upstream(leaking):
    pod = leaking
    key = pod.client_key()
    egress = f"http://{pod.egress}"
    before_seen = len(pod.recorded_requests())
    before = net.leak_counts(pod)
    encoded = base64.b64encode(key.encode()).decode()
    attempts = {
        "query": httpx.Request("GET", f"{egress}/health/activity/{net.DAY}?note={key}"),
        "header": httpx.Request("GET", f"{egress}/health/activity/{net.DAY}",
                                headers={"X-Request-Note": key}),
        "base64 header": httpx.Request("GET", f"{egress}/health/activity/{net.DAY}",
                                       headers={"X-Trace-Context": f"k={encoded}"}),
        "body": httpx.Request("POST", f"{egress}/health/activity",
                              json={"note": f"device {key}"}),
        "the APIM key in a query": httpx.Request(
            "GET", f"{egress}/health/sleep?pageSize=1&k={pod.state.secret(APIM)}"),
    }
    with httpx.Client(timeout=net.HTTP) as client:
        for what, request in attempts.items():
            reply = client.send(request)
            assert reply.status_code == 403, (what, reply.status_code)
            assert reply.json()["error"] == "secret_in_request", what
            net.assert_clean(pod, {f"the answer to the {what}": reply.text + str(reply.headers)})
    assert len(pod.recorded_requests()) == before_seen, "a request carrying a secret was sent"
    assert net.grew(before, net.leak_counts(pod)) == {("egress", CLIENT): 4, ("egress", APIM): 1}
    events = net.wait_for(lambda: len(net.audits(pod, "secret_in_request")) >= 5 and
                          net.audits(pod, "secret_in_request")) or []
    assert sorted(e.get("secret") for e in events[-5:]) == sorted([CLIENT] * 4 + [APIM])
    assert all(e.get("decision") == "deny" for e in events)
    # A clean request on the same route still goes.
    reply = httpx.get(f"{egress}/health/activity/{net.DAY}?pageSize=1", timeout=net.HTTP)
    assert reply.status_code == 200 and len(pod.recorded_requests()) == before_seen + 1
    assert_logs_clean(pod)


# ---------------------------------------------------------------------------------------------
# Metrics


def test_metrics_count_leaks_by_listener_and_secret_name(leaking):
    pod = leaking
    before = net.leak_counts(pod)
    for mode, times in (("echo", 2), ("client-key", 1)):
        net.set_leak(pod, mode)
        net.call_tools(pod, [TOOL] * times)
    net.set_leak(pod, "none")
    httpx.get(f"http://{pod.egress}/health/sleep?x={pod.client_key()}", timeout=net.HTTP)
    assert net.grew(before, net.leak_counts(pod)) == {("egress", APIM): 2, ("egress", CLIENT): 2}
    text = net.metrics_text(pod)
    assert f"# TYPE {net.LEAK_METRIC} counter" in text
    samples = [line for line in text.splitlines() if line.startswith(net.LEAK_METRIC)]
    assert samples and all('listener="' in s and 'secret="' in s for s in samples)
    net.assert_clean(pod, {"/metrics": text})
