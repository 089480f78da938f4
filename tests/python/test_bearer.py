"""Bearer tokens through keyward with real MCP clients: keyward's `[ingress.oauth]` takes the
tokens of a fake Entra ID (the `fake-idp` binary: OpenID discovery and keys over HTTPS with a
test CA, tokens minted over its control API) beside the API key, and forwards each request as
the client the token names.

    official MCP Python client ---Authorization: Bearer--> keyward --> hop --> mcp-backend
    TypeScript SDK (2.x client, 1.x sdk) --requestInit.headers--> keyward --> ...
    MCP Inspector CLI --header "Authorization: Bearer ..." --> keyward --> ...
    MCP Inspector CLI, no token --> keyward's 401 --> keyward's RFC 9728 metadata
                                --> the fake issuer's OpenID configuration

The hop (recording_backend.py) records what mcp-backend receives; mcp-backend logs the client
of each tool call. Raw-HTTP behaviour (both credentials at once, every refusal's exact shape,
readiness) is the Rust suite's (tests/tests/oauth.rs); this module is about clients. The
TypeScript SDK and the Inspector come from the everything install (npm); their tests are
skipped, saying why, when the registry cannot be reached. Everything listens on 127.0.0.1.

keyward limits failed authentications per peer (10 at once, 30 a minute, the pod's default);
the eight refused attempts here, spread over the run, stay inside that.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

import pod as podlib
from background_installs import install
from bearer_support import (
    APP_A,
    APP_STRANGER,
    SCOPE,
    TOKEN_CLIENT,
    BearerPod,
    envelope,
    inspector,
    inspector_until,
    ts_client,
)
from mcp_calls import TOOLS, json_of, mcp_session, run, statuses_in

PROTOCOL_VERSIONS = {"2025-03-26", "2025-06-18", "2025-11-25"}
CREDENTIAL_HEADERS = {"authorization", "x-api-key", "ocp-apim-subscription-key"}
DAY = "2025-02-02"


@pytest.fixture(scope="module")
def setup(bins, tmp_path_factory):
    directory = tmp_path_factory.mktemp("bearer")
    assert (bins / "fake-idp").exists(), "target/debug/fake-idp is missing"
    with BearerPod(bins, directory) as running:
        yield running


@pytest.fixture(scope="module")
def npm_dir():
    return install("everything").wait()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def responses_in(error: BaseException) -> list[httpx.Response]:
    """The HTTP responses carried by an exception, its groups and its causes."""
    found, stack, seen = [], [error], set()
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, httpx.HTTPStatusError):
            found.append(current.response)
        stack.extend(getattr(current, "exceptions", ()))
        stack.extend([current.__cause__, current.__context__])
    return found


def expired(now: int) -> dict[str, int]:
    """Claims of a token that expired an hour ago (issued two hours ago)."""
    return {"iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}


def assert_forwarded_as(setup, since: int, client: str) -> None:
    """Every request the hop recorded after `since` came as `client`, with no credential."""
    received = setup.recorder.snapshot()[since:]
    assert received, "nothing reached the backend"
    for request in received:
        assert request.values("X-Keyward-Client") == [client], request.headers
        assert request.names().isdisjoint(CREDENTIAL_HEADERS), request.names()
        assert request.path == "/mcp"


def assert_nothing_leaked(setup, **more: str) -> None:
    leaked = setup.leaked({**setup.outputs(), **more})
    assert not leaked, f"a token or key appears in {leaked}"


# ---------------------------------------------------------------------------------------------
# The official MCP Python client (1.x)


async def _python_session(url: str, headers: dict[str, str]):
    async with mcp_session(url, headers) as (client, init):
        tools = (await client.list_tools()).tools
        result = await client.call_tool("get_activity_by_date", {"date": DAY})
        return init, tools, result


def test_python_client_with_a_bearer_token(setup):
    """initialize, tools/list and tools/call with `Authorization: Bearer` on the SDK's HTTP
    client: keyward accepts agent-a's token, and mcp-backend sees agent-a, never the token."""
    since, log_at = len(setup.recorder.snapshot()), setup.log_offset()
    backend_at = setup.log_offset("mcp-backend")
    token = setup.idp.mint(APP_A)

    init, tools, result = run(_python_session(setup.pod.mcp_url, bearer(token)))
    assert init.protocolVersion in PROTOCOL_VERSIONS
    assert init.serverInfo.name == "mcp-backend"
    assert sorted(tool.name for tool in tools) == sorted(TOOLS)
    assert result.isError is False
    record = json_of(result)
    assert (record["Date"], record["DocumentType"]) == (DAY, "Activity")

    assert_forwarded_as(setup, since, TOKEN_CLIENT)
    assert ("get_activity_by_date", TOKEN_CLIENT) in setup.tool_calls(backend_at)
    log = setup.keyward_log(log_at, ("POST", "/mcp"))
    assert log.audit, "keyward audited nothing"
    assert {a[:4] for a in log.audit} == {("allow", "bearer", "valid_token", TOKEN_CLIENT)}
    assert {(a[2], a[3]) for a in log.access} <= {(200, TOKEN_CLIENT), (202, TOKEN_CLIENT),
                                                  (405, TOKEN_CLIENT)}, log.access
    assert_nothing_leaked(setup)


def test_python_client_with_the_api_key_beside_oauth(setup):
    """The API-key client still works with OAuth on, and is still itself."""
    since = len(setup.recorder.snapshot())
    init, tools, result = run(
        _python_session(setup.pod.mcp_url, {"X-Api-Key": setup.pod.client_key()})
    )
    assert init.serverInfo.name == "mcp-backend" and len(tools) == 12
    assert result.isError is False
    assert_forwarded_as(setup, since, podlib.CLIENT_ID)


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("not-a-jwt", 401, "malformed_token"),
        ("tampered", 401, "bad_signature"),
        ("expired", 401, "expired"),
        ("unknown-agent", 403, "unknown_agent"),
    ],
)
def test_python_client_with_a_bad_token_is_refused(setup, case, status, reason):
    """The client raises the HTTP error of its first request (initialize): 401 with the Bearer
    challenge naming keyward's metadata and invalid_token for a token keyward cannot accept,
    403 without a challenge for a valid token of an agent it has no client for; nothing
    reaches the backend."""
    idp = setup.idp
    token = {
        "not-a-jwt": lambda: "not-a-jwt",
        "tampered": lambda: idp.mint(APP_A, tamper=True),
        "expired": lambda: idp.mint(APP_A, claims=expired(int(idp.state()["now"]))),
        "unknown-agent": lambda: idp.mint(APP_STRANGER),
    }[case]()
    since, log_at = len(setup.recorder.snapshot()), setup.log_offset()

    with pytest.raises(BaseException) as refused:  # noqa: PT011 - an ExceptionGroup here
        run(_python_session(setup.pod.mcp_url, bearer(token)), timeout=30)
    assert statuses_in(refused.value) == [status], repr(refused.value)
    (response,) = responses_in(refused.value)
    challenge = response.headers.get("www-authenticate", "")
    # The client has closed the stream by now: the headers are what there is to see.
    if status == 401:
        metadata = f'resource_metadata="http://{setup.pod.ingress}{setup.metadata_path}"'
        assert challenge.startswith("Bearer ") and metadata in challenge, challenge
        assert 'error="invalid_token"' in challenge, challenge
    else:
        assert not challenge, challenge
    assert token not in str(response.headers)
    log = setup.keyward_log(log_at, ("POST", "/mcp"))
    assert [a[:3] for a in log.audit] == [("deny", "bearer", reason)], log.audit
    assert [a[:3] for a in log.access] == [("POST", "/mcp", status)], log.access
    assert len(setup.recorder.snapshot()) == since, "a refused request reached the backend"
    assert_nothing_leaked(setup)


# ---------------------------------------------------------------------------------------------
# The TypeScript SDK: @modelcontextprotocol/client (2.x; the version the Inspector 2.12.0 pins)
# and @modelcontextprotocol/sdk (1.x; server-everything's dependency, a caret range)

SDKS = {"client": "@modelcontextprotocol/client", "sdk": "@modelcontextprotocol/sdk"}


@pytest.mark.everything
@pytest.mark.parametrize("line", sorted(SDKS))
def test_typescript_sdk_with_a_bearer_token(setup, npm_dir, tmp_path, line):
    """`new StreamableHTTPClientTransport(url, {requestInit: {headers: {Authorization}}})`:
    connect (initialize), listTools, callTool; every request carries the token (the script's
    counting fetch says so, without the token) and is answered."""
    since, backend_at = len(setup.recorder.snapshot()), setup.log_offset("mcp-backend")
    token = setup.idp.mint(APP_A)
    status, out = ts_client(npm_dir, tmp_path, setup.pod.mcp_url, "session", line, token=token)
    assert status == 0, out
    assert out["sdk"] == SDKS[line]
    if line == "client":
        assert out["version"] == "2.3.1"
    assert out["server"]["name"] == "mcp-backend"
    assert out["protocol_version"] in PROTOCOL_VERSIONS
    assert set(out["tools"]) == TOOLS
    assert out["call"]["is_error"] is False
    record = json.loads(out["call"]["text"])
    assert (record["Date"], record["DocumentType"]) == (DAY, "Sleep")
    assert all(out["authorized"]) and len(out["authorized"]) == len(out["statuses"])
    # The GET for a standalone SSE stream is mcp-backend's 405: it has none.
    assert set(out["statuses"]) <= {200, 202, 405}, out["statuses"]
    assert_forwarded_as(setup, since, TOKEN_CLIENT)
    assert ("get_sleep_by_date", TOKEN_CLIENT) in setup.tool_calls(backend_at)
    assert_nothing_leaked(setup)


@pytest.mark.everything
@pytest.mark.parametrize("line", sorted(SDKS))
def test_typescript_sdk_with_a_bad_token_fails_with_the_401(setup, npm_dir, tmp_path, line):
    """Without an authProvider the SDK does not start OAuth: connect fails with keyward's 401
    and its body (2.x SdkHttpError with status 401, 1.x StreamableHTTPError with code 401)."""
    token = setup.idp.mint(APP_A, tamper=True)
    status, out = ts_client(npm_dir, tmp_path, setup.pod.mcp_url, "session", line, token=token)
    assert status == 1, out
    assert out["statuses"] == [401] and out["authorized"] == [True], out
    error = out["error"]
    if line == "client":
        assert (error["name"], error["status"]) == ("SdkHttpError", 401), error
    else:
        assert (error["name"], error["code"]) == ("StreamableHTTPError", 401), error
    body = json.loads(error["message"].split("Error POSTing to endpoint: ", 1)[1])
    assert body["error"] == "invalid_token", error


@pytest.mark.everything
def test_typescript_sdk_discovers_the_issuer_through_keyward(setup, npm_dir, tmp_path):
    """`discoverOAuthServerInfo(url)` (2.x client): keyward's RFC 9728 document names the
    fake issuer, whose OpenID configuration the SDK then reads, trusting the fake's CA through
    NODE_EXTRA_CA_CERTS; without it node cannot reach the issuer."""
    log_at = setup.log_offset()
    discovered = setup.idp.state()["discovery_fetches"]
    url = setup.pod.mcp_url
    status, out = ts_client(npm_dir, tmp_path / "ca", url, "discover", ca_file=setup.idp.ca_file)
    assert status == 0, out
    issuer = setup.idp.issuer
    assert out["authorization_server"] == issuer
    assert out["resource_metadata"] == {
        "resource": setup.resource,
        "authorization_servers": [issuer],
        "scopes_supported": [SCOPE],
        "bearer_methods_supported": ["header"],
    }
    tenant = issuer.removesuffix("/v2.0")
    assert out["metadata"] == {
        "issuer": issuer,
        "authorization_endpoint": f"{tenant}/oauth2/v2.0/authorize",
        "token_endpoint": f"{tenant}/oauth2/v2.0/token",
        "registration_endpoint": None,  # Entra has none, and neither has the fake
    }
    assert setup.idp.state()["discovery_fetches"] > discovered
    log = setup.keyward_log(log_at, ("GET", setup.metadata_path))
    assert ("GET", setup.metadata_path, 200, "unknown") in log.access, log.access
    assert not log.audit, "the metadata was checked for a credential"

    status, out = ts_client(npm_dir, tmp_path / "no-ca", url, "discover")
    assert status == 1, out
    assert out["error"] == {"name": "TypeError", "message": "fetch failed"}, out


# ---------------------------------------------------------------------------------------------
# The MCP Inspector's CLI (2.12.0)


@pytest.mark.everything
def test_inspector_cli_with_a_bearer_token_lists_the_tools(setup, npm_dir, tmp_path):
    """`--header "Authorization: Bearer <token>"` (its flag: "Name: Value" pairs): tools/list
    as agent-a."""
    log_at, since = setup.log_offset(), len(setup.recorder.snapshot())
    token = setup.idp.mint(APP_A)
    done = inspector(npm_dir, tmp_path, setup.pod.mcp_url, "--header",
                     f"Authorization: Bearer {token}")
    assert done.returncode == 0, done.stderr[-2000:]
    tools = json.loads(done.stdout)["tools"]
    assert sorted(tool["name"] for tool in tools) == sorted(TOOLS)
    log = setup.keyward_log(log_at, ("POST", "/mcp"))
    assert log.audit and {a[:4] for a in log.audit} == {
        ("allow", "bearer", "valid_token", TOKEN_CLIENT)
    }, log.audit
    assert_forwarded_as(setup, since, TOKEN_CLIENT)
    assert_nothing_leaked(setup, inspector=done.stdout + done.stderr)


NO_REGISTRATION = "Incompatible auth server: does not support dynamic client registration"
NAVIGATE = "Please navigate to: "


@pytest.mark.everything
def test_inspector_cli_without_a_token_finds_the_issuer_through_keyward(
    setup, npm_dir, tmp_path
):
    """At a terminal (auto-open off), without a token: keyward's 401 names its metadata, the
    Inspector fetches it (the path-aware URL, 200, no credential asked), reads the issuer's
    OpenID configuration at the fake (NODE_EXTRA_CA_CERTS trusts its CA), and then:

    - without a client id it stops, since the issuer has no registration_endpoint (Entra has
      none either). It does not name the issuer; that the issuer's document was read shows
      in the fake's discovery counter. Its stderr, after two lines about its in-memory secret
      store, ends with:

        {"error":{"code":"error","message":"Incompatible auth server: does not support
        dynamic client registration"}}

    - with --client-id APP_A (a static client: no registration) it prints the URL to open,
      the fake issuer's authorization_endpoint with keyward's resource, keyward's scope (from
      scopes_supported, plus offline_access) and PKCE, then waits for the browser's callback
      until it is stopped:

        [mcp-sdk] SEP-2352: stored OAuth credential has no 'issuer' stamp (...)
        Please navigate to: https://localhost:PORT/TENANT/oauth2/v2.0/authorize
          ?response_type=code&client_id=APP_A&code_challenge=...&code_challenge_method=S256
          &redirect_uri=http%3A%2F%2F127.0.0.1%3APORT%2Foauth%2Fcallback&state=...
          &scope=mcp.tools+offline_access&prompt=consent
          &resource=http%3A%2F%2F127.0.0.1%3APORT%2Fmcp
        {"error":{"code":"error","message":"OAuth authorization cancelled (SIGTERM)."}}

    It asks keyward for nothing else (no /register, no authorization-server metadata on
    keyward's origin): POST /mcp (401), then the metadata (200). The SDK's candidates for the
    issuer's document are, in order, `/.well-known/oauth-authorization-server/TENANT/v2.0`,
    `/.well-known/openid-configuration/TENANT/v2.0` (both 404 at the fake, as at Entra) and
    `{issuer}/.well-known/openid-configuration`, which the fake serves: no RFC 8414 document
    is needed.
    (Without a terminal it stops before any discovery, as test_third_party.py shows.)
    """
    idp, ca = setup.idp, {"NODE_EXTRA_CA_CERTS": str(setup.idp.ca_file)}
    url = setup.pod.mcp_url
    metadata = setup.metadata_path

    def discovered(before_log: int, before_fetches: int):
        log = setup.keyward_log(before_log, ("GET", metadata))
        assert log.access == [("POST", "/mcp", 401, "unknown"),
                              ("GET", metadata, 200, "unknown")], log.access
        # The one audit line is the refused POST (no credential at all); the metadata is
        # served before authentication.
        assert [(a[0], a[2], a[4]) for a in log.audit] == [("deny", "missing", "/mcp")]
        assert idp.state()["discovery_fetches"] > before_fetches

    # No client id: discovery, then no way to register.
    log_at, fetches = setup.log_offset(), idp.state()["discovery_fetches"]
    done = inspector(npm_dir, tmp_path / "dcr", url, env=ca)
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stdout == ""
    assert envelope(done.stderr)["error"] == {"code": "error", "message": NO_REGISTRATION}
    discovered(log_at, fetches)

    # A static client id: the authorization URL at the fake issuer.
    log_at, fetches = setup.log_offset(), idp.state()["discovery_fetches"]
    callback = f"http://127.0.0.1:{podlib.free_port()}/oauth/callback"
    stdout, stderr, status = inspector_until(
        npm_dir, tmp_path / "static", url, NAVIGATE,
        "--client-id", APP_A, "--callback-url", callback, env=ca,
    )
    lines = [line for line in stderr.splitlines() if line.startswith(NAVIGATE)]
    assert len(lines) == 1, stderr[-2000:]
    authorize = urlsplit(lines[0].removeprefix(NAVIGATE).strip())
    tenant = idp.issuer.removesuffix("/v2.0")
    assert f"{authorize.scheme}://{authorize.netloc}{authorize.path}" == (
        f"{tenant}/oauth2/v2.0/authorize"
    )
    query = {name: values[0] for name, values in parse_qs(authorize.query).items()}
    assert query["response_type"] == "code"
    assert query["client_id"] == APP_A
    assert query["resource"] == setup.resource
    assert SCOPE in query["scope"].split(), query["scope"]
    assert query["redirect_uri"] == callback
    assert query["code_challenge_method"] == "S256" and query["code_challenge"]
    assert stdout == ""
    assert status != 0
    assert envelope(stderr)["error"]["message"] == "OAuth authorization cancelled (SIGTERM)."
    discovered(log_at, fetches)
    assert_nothing_leaked(setup, inspector=stdout + stderr + done.stdout + done.stderr)

