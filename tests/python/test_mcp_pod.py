"""Black-box tests of the local pod with the official MCP Python client (1.x).

Every MCP call goes client -> keyward ingress (X-Api-Key) -> mcp-backend -> keyward egress
(+ Ocp-Apim-Subscription-Key) -> health-data API stand-in, all real binaries on 127.0.0.1.
"""

from __future__ import annotations

from datetime import date

import httpx
import pytest

import pod as podlib
from mcp_calls import (
    COVERED_DAYS,
    DOMAINS,
    TOOLS,
    json_of,
    mcp_session,
    run,
    statuses_in,
    text_of,
)

PROTOCOL_VERSIONS = {"2025-03-26", "2025-06-18", "2025-11-25"}
CREDENTIAL_HEADERS = {"x-api-key", "authorization", "ocp-apim-subscription-key"}
PAYLOAD = {
    "activity": ("Activity", ["Activity"]),
    "sleep": ("Sleep", ["Sleep"]),
    "food": ("Food", ["Food"]),
    "vitals": ("Vitals", ["Weight", "BloodPressureReadings", "Provider"]),
}


def key_headers(pod) -> dict[str, str]:
    return {"X-Api-Key": pod.client_key()}


def contains_secret(pod, text: str) -> bool:
    """Whether `text` holds any form of a generated key. Assertions use the bool, so a failure
    never prints a key."""
    forms = [form for value in pod.secret_values() for form in podlib.secret_forms(value)]
    assert len(forms) >= 2 * len(podlib.SECRET_NAMES)
    return any(form in text for form in forms)


def assert_no_secret(pod, texts: dict[str, str]) -> None:
    for name, text in texts.items():
        leaked = contains_secret(pod, text)
        assert not leaked, f"a generated secret appears in {name}"


# ---------------------------------------------------------------------------------------------
# The protocol, through keyward


def test_initialize_through_keyward(pod):
    async def session():
        async with mcp_session(pod.mcp_url, key_headers(pod)) as (_, init):
            return init

    init = run(session())
    assert init.protocolVersion in PROTOCOL_VERSIONS
    assert init.serverInfo.name == "mcp-backend"
    assert init.capabilities.tools is not None
    assert "health" in (init.instructions or "")


def test_tools_list_is_the_twelve_read_only_tools(pod):
    async def session():
        async with mcp_session(pod.mcp_url, key_headers(pod)) as (client, _):
            return (await client.list_tools()).tools

    tools = run(session())
    assert sorted(tool.name for tool in tools) == sorted(TOOLS)
    assert len(tools) == 12
    for tool in tools:
        assert tool.description, tool.name
        schema = tool.inputSchema
        assert schema["type"] == "object", tool.name
        properties = schema.get("properties", {})
        if tool.name.endswith("_by_date"):
            assert set(schema["required"]) == {"date"}
            assert properties["date"]["type"] == "string"
        elif tool.name.endswith("_by_date_range"):
            assert {"startDate", "endDate"} <= set(schema["required"])
            assert {"startDate", "endDate", "pageNumber", "pageSize"} <= set(properties)
        else:
            assert tool.name.endswith("_records")
            assert {"pageNumber", "pageSize"} <= set(properties)
            assert not schema.get("required")
        annotations = tool.annotations
        assert annotations is not None, tool.name
        assert annotations.readOnlyHint is True, tool.name
        assert annotations.destructiveHint is False, tool.name
        assert annotations.idempotentHint is True, tool.name


@pytest.mark.parametrize("domain", DOMAINS)
def test_tool_calls_return_data_for_each_domain(pod, domain):
    day = "2025-02-02"

    async def session():
        async with mcp_session(pod.mcp_url, key_headers(pod)) as (client, _):
            one = await client.call_tool(f"get_{domain}_by_date", {"date": day})
            span = await client.call_tool(
                f"get_{domain}_by_date_range",
                {"startDate": "2025-03-01", "endDate": "2025-03-07", "pageSize": 5},
            )
            every = await client.call_tool(f"get_{domain}_records", {"pageNumber": 2, "pageSize": 3})
            return one, span, every

    one, span, every = run(session())
    document_type, payload_keys = PAYLOAD[domain]

    assert one.isError is False, text_of(one)
    record = json_of(one)
    assert record["Date"] == day
    assert record["DocumentType"] == document_type
    for key in payload_keys:
        assert key in record, key
    if domain == "activity":
        assert record["Activity"]["summary"]["steps"] > 0

    assert span.isError is False, text_of(span)
    page = json_of(span)
    assert page["TotalCount"] == 7
    assert (page["PageNumber"], page["PageSize"], page["TotalPages"]) == (1, 5, 2)
    assert page["HasNextPage"] is True and page["HasPreviousPage"] is False
    assert len(page["Items"]) == 5
    for item in page["Items"]:
        assert "2025-03-01" <= item["Date"] <= "2025-03-07"
        assert item["DocumentType"] == document_type

    assert every.isError is False, text_of(every)
    page = json_of(every)
    assert page["TotalCount"] == COVERED_DAYS
    assert (page["PageNumber"], page["PageSize"]) == (2, 3)
    assert len(page["Items"]) == 3
    assert all(date.fromisoformat(item["Date"]) for item in page["Items"])


def test_bad_arguments_are_tool_errors_not_exceptions(pod):
    async def session():
        async with mcp_session(pod.mcp_url, key_headers(pod)) as (client, _):
            return [
                await client.call_tool("get_activity_by_date", {"date": "2025-13-45"}),
                await client.call_tool("get_sleep_by_date", {"date": "02/02/2025"}),
                await client.call_tool(
                    "get_food_by_date_range", {"startDate": "2025-03-07", "endDate": "2025-03-01"}
                ),
                await client.call_tool("get_vitals_by_date", {"date": "2019-01-01"}),
            ]

    results = run(session())
    for result in results:
        assert result.isError is True
        assert set(json_of(result)) == {"error"}
    assert "date" in json_of(results[0])["error"]
    assert "yyyy-MM-dd" in json_of(results[1])["error"]
    assert "startDate" in json_of(results[2])["error"]
    assert "no vitals record" in json_of(results[3])["error"]


# ---------------------------------------------------------------------------------------------
# Authentication at the ingress


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Api-Key": "not-the-key"}, {"Authorization": "Bearer not-a-key"}],
    ids=["no-key", "wrong-key", "bearer-instead-of-key"],
)
def test_the_mcp_client_without_the_key_is_refused(pod, headers):
    async def session():
        async with mcp_session(pod.mcp_url, headers):
            pass

    with pytest.raises(BaseException) as refused:  # noqa: PT011 - an ExceptionGroup here
        run(session(), timeout=30)
    assert 401 in statuses_in(refused.value), repr(refused.value)


def test_a_refusal_is_a_plain_401_that_names_no_key(pod):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    accept = {"Accept": "application/json, text/event-stream"}
    sent = "x" * 43
    reply = httpx.post(pod.mcp_url, json=body, headers={**accept, "X-Api-Key": sent})
    assert reply.status_code == 401
    assert reply.json() == {
        "error": "unauthorized",
        "message": "a valid X-Api-Key header is required",
    }
    assert reply.headers.get("www-authenticate") == 'ApiKey header="X-Api-Key"'
    # Nothing of the request comes back: not the key sent, not the method asked for.
    answer = reply.text + str(reply.headers)
    assert sent not in answer and "tools/list" not in answer
    leaked = contains_secret(pod, answer)
    assert not leaked


# ---------------------------------------------------------------------------------------------
# What crosses: the stand-in's record, keyward's egress contract, the backend's view


def test_the_health_api_sees_the_subscription_key_and_never_a_client_credential(pod):
    async def session():
        async with mcp_session(pod.mcp_url, key_headers(pod)) as (client, _):
            for domain in DOMAINS:
                result = await client.call_tool(f"get_{domain}_by_date", {"date": "2024-02-29"})
                assert result.isError is False, text_of(result)

    run(session())
    seen = pod.recorded_requests()
    assert len(seen) >= len(DOMAINS)
    for request in seen:
        assert request["has_subscription_key"] is True, request
        assert request["has_x_api_key"] is False, request
        assert request["has_authorization"] is False, request
        names = {name.lower() for name in request["headers"]}
        assert names.isdisjoint({"x-api-key", "authorization", "x-keyward-client"}), names
        assert request["path"].startswith("/biotrackr/"), request


def test_egress_replaces_credentials_and_allows_only_its_routes(pod):
    """What keyward's egress does with whatever the backend might send."""
    before = len(pod.recorded_requests())
    egress = f"http://{pod.egress}"
    spoofed = {
        "Ocp-Apim-Subscription-Key": "not-the-key",
        "Authorization": "Bearer not-a-token",
        "X-Api-Key": pod.client_key(),
    }
    reply = httpx.get(f"{egress}/health/sleep/2025-05-05", headers=spoofed)
    # 200 means the stand-in got the right key: keyward's, not the one sent.
    assert reply.status_code == 200, reply.text
    assert reply.json()["Date"] == "2025-05-05"
    last = pod.recorded_requests()[-1]
    assert last["has_subscription_key"] and not last["has_authorization"]
    assert not last["has_x_api_key"]

    for path in ("/other/activity/2025-05-05", "/health/../admin", "/health/%2e%2e/x", "/"):
        refused = httpx.get(f"{egress}{path}")
        assert refused.status_code in (400, 403, 404), (path, refused.status_code)
    assert len(pod.recorded_requests()) == before + 1, "a refused route reached the upstream"


def test_the_backend_never_receives_a_client_credential(recording_pod):
    """keyward's ingress forwards to a recording hop in front of the real backend: what it
    records is exactly what the backend would receive."""
    pod, recorder = recording_pod
    key = pod.client_key()

    async def session():
        async with mcp_session(pod.mcp_url, key_headers(pod)) as (client, _):
            tools = (await client.list_tools()).tools
            result = await client.call_tool("get_food_by_date", {"date": "2026-12-31"})
            return tools, result

    tools, result = run(session())
    assert len(tools) == 12
    assert json_of(result)["Date"] == "2026-12-31"

    # A client that also sends every other credential header and claims another identity.
    initialize = {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "curl-like", "version": "0"}},
    }
    reply = httpx.post(
        pod.mcp_url,
        json=initialize,
        headers={
            "Accept": "application/json, text/event-stream",
            "X-Api-Key": key,
            "Authorization": "Bearer spoofed-token",
            "Ocp-Apim-Subscription-Key": "spoofed-subscription",
            "X-Keyward-Client": "admin",
        },
    )
    assert reply.status_code == 200, reply.text
    assert "mcp-backend" in reply.text

    received = recorder.snapshot()
    assert len(received) >= 4
    for request in received:
        assert request.names().isdisjoint(CREDENTIAL_HEADERS), request.names()
        assert request.values("X-Keyward-Client") == [podlib.CLIENT_ID]
        values = "\n".join(value for _, value in request.headers)
        leaked = contains_secret(pod, values)
        assert not leaked, "a key reached the backend in a header value"
        assert "spoofed" not in values
        assert request.path == "/mcp"


# ---------------------------------------------------------------------------------------------
# Key Vault, and what the processes print


def test_keyvault_pod_answers_a_tool_call(keyvault_pod):
    pod = keyvault_pod
    config = pod.state.config.read_text()
    assert 'source = "keyvault"' in config and "dir =" not in config

    async def session():
        async with mcp_session(pod.mcp_url, key_headers(pod)) as (client, _):
            return await client.call_tool("get_sleep_by_date", {"date": "2025-07-04"})

    result = run(session())
    assert result.isError is False, text_of(result)
    record = json_of(result)
    assert (record["Date"], record["DocumentType"]) == ("2025-07-04", "Sleep")
    assert all(r["has_subscription_key"] for r in pod.recorded_requests())
    assert_no_secret(pod, pod.logs())


def test_no_output_carries_a_generated_secret(pod):
    """keyward's, the backend's (and the stand-in's) stdout and stderr, after successful calls,
    refused keys and the egress tests, hold no form of either generated key."""

    async def session():
        async with mcp_session(pod.mcp_url, key_headers(pod)) as (client, _):
            await client.call_tool("get_activity_by_date", {"date": "2025-01-01"})

    run(session())
    httpx.post(pod.mcp_url, json={}, headers={"X-Api-Key": pod.client_key()[:-1] + "A"})
    logs = pod.logs()
    assert {"keyward", "mcp-backend", "health-api"} <= set(logs)
    assert '"keyward listening"' in logs["keyward"]
    assert "tool call succeeded" in logs["mcp-backend"]
    assert_no_secret(pod, logs)
    assert_no_secret(pod, {"the stand-in's record": pod.state.record.read_text()})
    assert_no_secret(pod, {"keyward.toml": pod.state.config.read_text()})


def test_the_state_directory_is_private(pod):
    state = pod.state
    assert state.dir.stat().st_mode & 0o777 == 0o700
    assert state.secrets_dir.stat().st_mode & 0o777 == 0o700
    for name in podlib.SECRET_NAMES:
        assert state.secret_file(name).stat().st_mode & 0o777 == 0o600
        assert len(state.secret(name)) == 43  # 32 bytes, URL-safe base64, no padding
    assert state.client_header.stat().st_mode & 0o777 == 0o600
    header_is_the_key = state.client_header.read_text() == f"X-Api-Key: {pod.client_key()}\n"
    assert header_is_the_key
