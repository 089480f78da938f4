"""What test_bearer.py drives keyward with: the fake Entra ID (the `fake-idp` binary on
127.0.0.1: its OpenID provider over HTTPS with a test CA, its control API over HTTP), a pod
whose keyward takes that issuer's tokens beside the API key, with a recording hop in front of
mcp-backend, keyward's access and audit lines, and the third-party clients (the TypeScript SDK
script in bearer/, the MCP Inspector's CLI) run from the everything install.

    with BearerPod(bins, directory) as setup:
        token = setup.idp.mint(APP_A)    # {"app_id": APP_A} -> an RS256 v2.0 access token
        setup.pod.mcp_url, setup.recorder.snapshot(), setup.keyward_log(offset, until)

Tokens come from the control API only; the fake never prints one, and neither does this
module (the tests assert that none reaches a log).
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pod as podlib
from background_installs import HERE
from recording_backend import RecordingBackend

# The application (client) id of the agent's app registration, and the keyward client it is.
APP_A = "5f0e4c1a-8b2d-4e6f-9a3c-7d1b2e4f6a80"
TOKEN_CLIENT = "agent-a"
# An application the tenant trusts but keyward has no client for.
APP_STRANGER = "0d9c8b7a-6e5f-4d3c-2b1a-0f9e8d7c6b5a"
# The scope the fake's delegated tokens carry (`scp`) and keyward advertises and requires.
SCOPE = "mcp.tools"


class FakeIdp:
    """`fake-idp --ca-out FILE`, started and stopped; its ready line's fields as attributes
    (issuer, jwks_uri, control, tenant_id, resource_app_id, ca_file)."""

    def __init__(self, bins: Path, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = directory / "fake-idp-ca.pem"
        self.child = podlib.Child(
            "fake-idp",
            [str(bins / "fake-idp"), "--ca-out", str(self.ca_file)],
            directory / "fake-idp.log",
            podlib._child_env(),
        )

    def __enter__(self) -> FakeIdp:
        try:
            ready = self.child.wait_line(
                lambda line: (e := podlib._json_line(line)) and ("issuer" in e and e) or None
            )
        except BaseException:
            self.__exit__()
            raise
        self.issuer: str = ready["issuer"]
        self.jwks_uri: str = ready["jwks_uri"]
        self.control: str = ready["control"]
        self.tenant_id: str = ready["tenant_id"]
        self.resource_app_id: str = ready["resource_app_id"]
        assert self.issuer.startswith("https://localhost:"), self.issuer
        assert self.control.startswith("http://127.0.0.1:"), self.control
        self.minted: list[str] = []
        return self

    def __exit__(self, *exc) -> None:
        self.child.terminate()
        self.child.reap(time.monotonic() + podlib.STOP_TIMEOUT)

    def _post(self, route: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"{self.control}{route}", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())

    def state(self) -> dict:
        with urllib.request.urlopen(f"{self.control}/state", timeout=10) as reply:
            return json.loads(reply.read())

    def mint(self, app_id: str, **options) -> str:
        """A token for `app_id` (control API `/mint`: alg, claims overrides, tamper...)."""
        token = self._post("/mint", {"app_id": app_id, **options})["token"]
        self.minted.append(token)
        return token

    def oauth(self) -> podlib.OAuth:
        """keyward's `[ingress.oauth]` for this issuer: audience the API's application id (what
        the fake's tokens carry), scope required, and agent-a known by APP_A."""
        return podlib.OAuth(
            issuer=self.issuer,
            ca_file=self.ca_file,
            audiences=(self.resource_app_id,),
            token_clients=((TOKEN_CLIENT, (APP_A,)),),
            scopes=(SCOPE,),
            required_scopes=(SCOPE,),
        )

    def token_forms(self) -> list[str]:
        """Every token minted, and each one's signature: what must appear in no output."""
        forms = set(self.minted)
        forms.update(sig for t in self.minted if len(sig := t.rsplit(".", 1)[-1]) >= 16)
        return sorted(forms)


# ---------------------------------------------------------------------------------------------
# The pod


class BearerPod:
    """fake-idp, a recording hop, and a pod whose keyward has `[ingress.oauth]` for the fake's
    issuer (idp.oauth()) and forwards to the hop, which forwards to mcp-backend. Two clients:
    podlib.CLIENT_ID by API key, TOKEN_CLIENT by APP_A's tokens."""

    def __init__(self, bins: Path, directory: Path):
        self.bins = bins
        self.dir = directory
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> BearerPod:
        try:
            self.idp = self._stack.enter_context(FakeIdp(self.bins, self.dir / "idp"))
            self.recorder = self._stack.enter_context(RecordingBackend())
            self.pod = self._stack.enter_context(
                podlib.Pod(self.dir / "pod", ports="auto", bins=self.bins,
                           ingress_backend=self.recorder.addr, oauth=self.idp.oauth())
            )
        except BaseException:
            self._stack.close()
            raise
        self.recorder.target = self.pod.backend_addr
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    @property
    def resource(self) -> str:
        return podlib.resource_url(self.pod.ingress)

    @property
    def metadata_path(self) -> str:
        """RFC 9728: the well-known path, then the resource's path."""
        return "/.well-known/oauth-protected-resource/mcp"

    def log_offset(self, name: str = "keyward") -> int:
        return len(self.pod.logs(name)[name])

    def events(self, name: str, offset: int) -> list[dict]:
        """The JSON lines `name` logged after `offset` characters (complete lines only)."""
        text = self.pod.logs(name)[name][offset:]
        lines = [line for line in text.splitlines(keepends=True) if line.endswith("\n")]
        return [e for e in map(podlib._json_line, lines) if e]

    def keyward_log(self, offset: int, last: tuple[str, str]) -> KeywardLog:
        """keyward's access and audit lines after `offset`, once the access line for `last`
        (method, path), the request the client made last, is there (at most 5 s)."""
        deadline = time.monotonic() + 5
        while True:
            log = KeywardLog.of(self.events("keyward", offset))
            if any(a[:2] == last for a in log.access) or time.monotonic() > deadline:
                return log
            time.sleep(0.05)

    def tool_calls(self, offset: int) -> list[tuple[str, str]]:
        """(tool, client) of each tool call mcp-backend logged after `offset`."""
        out = []
        for event in self.events("mcp-backend", offset):
            fields = event.get("fields") or {}
            if str(fields.get("message", "")).startswith("tool call"):
                out.append((fields.get("tool"), fields.get("client")))
        return out

    def outputs(self) -> dict[str, str]:
        """Every process's output so far: the pod's and the fake's."""
        return {**self.pod.logs(), "fake-idp": self.idp.child.output()}

    def leaked(self, texts: dict[str, str]) -> list[str]:
        """The names of the texts holding a minted token (or its signature) or a pod secret."""
        forms = self.idp.token_forms()
        forms += [f for value in self.pod.secret_values() for f in podlib.secret_forms(value)]
        return [name for name, text in texts.items() if any(form in text for form in forms)]


@dataclass(frozen=True)
class KeywardLog:
    """keyward's ingress access lines (method, path, status, client) and audit lines
    (decision, scheme, reason, client, path)."""

    access: list[tuple]
    audit: list[tuple]

    @classmethod
    def of(cls, events: list[dict]) -> KeywardLog:
        return cls(
            access=[(e.get("method"), e.get("path"), e.get("status"), e.get("client"))
                    for e in events
                    if e.get("target") == "keyward::access" and e.get("listener") == "ingress"],
            audit=[(e.get("decision"), e.get("scheme"), e.get("reason"), e.get("client"),
                    e.get("path"))
                   for e in events if e.get("target") == "keyward::audit"],
        )


# ---------------------------------------------------------------------------------------------
# The third-party clients, from the everything install (tests/python/everything)

TS_CLIENT = HERE / "bearer" / "ts_client.cjs"
CLI_TIMEOUT = 60


def node_env(home: Path, npm_dir: Path, **extra: str) -> dict[str, str]:
    """A clean environment for node and the Inspector: its catalog and state in `home`, OAuth
    secrets in memory, no colour."""
    bin_dir = npm_dir / "node_modules" / ".bin"
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(home),
        "MCP_CATALOG_PATH": str(home / "catalog.json"),
        "MCP_INSPECTOR_SECRET_STORE": "memory",
        "NO_COLOR": "1",
        **extra,
    }


def ts_client(npm_dir: Path, home: Path, url: str, *args: str, token: str | None = None,
              ca_file: Path | None = None) -> tuple[int, dict]:
    """bearer/ts_client.cjs with the install's node; (exit status, its JSON line). The token
    goes in the environment, not on the command line."""
    extra = {}
    if token is not None:
        extra["MCP_BEARER_TOKEN"] = token
    if ca_file is not None:
        extra["NODE_EXTRA_CA_CERTS"] = str(ca_file)
    node = npm_dir / "node_modules" / ".bin" / "node"
    done = subprocess.run(
        [str(node), str(TS_CLIENT), str(npm_dir), url, *args],
        env=node_env(home, npm_dir, **extra), cwd=home, capture_output=True, text=True,
        timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"exit {done.returncode}, no output; stderr: {done.stderr[-2000:]}"
    return done.returncode, json.loads(lines[-1])


def inspector_argv(npm_dir: Path, url: str, *extra: str) -> list[str]:
    bin_dir = npm_dir / "node_modules" / ".bin"
    return [str(bin_dir / "inspector"), "--cli", url, "--transport", "http",
            "--method", "tools/list", *extra]


def inspector(npm_dir: Path, home: Path, url: str, *extra: str,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`inspector --cli URL --transport http --method tools/list EXTRA...`, stdin at a
    pseudo-terminal (as for someone at a shell) so that it may run interactive OAuth, with
    auto-open off: no browser. stdout and stderr are captured."""
    controller, stdin = pty.openpty()
    try:
        return subprocess.run(
            inspector_argv(npm_dir, url, *extra),
            env=node_env(home, npm_dir, MCP_AUTO_OPEN_ENABLED="false", **(env or {})),
            cwd=home, capture_output=True, text=True, timeout=CLI_TIMEOUT, stdin=stdin,
        )
    finally:
        os.close(stdin)
        os.close(controller)


def inspector_until(npm_dir: Path, home: Path, url: str, marker: str, *extra: str,
                    env: dict[str, str] | None = None) -> tuple[str, str, int]:
    """The Inspector as above, stopped with SIGTERM once its stderr has a complete line with
    `marker` (an interactive OAuth flow waits for the browser's callback, which never comes);
    (stdout, stderr, exit status). Fails after CLI_TIMEOUT seconds without the line."""
    out, err = home / "inspector.stdout", home / "inspector.stderr"
    home.mkdir(parents=True, exist_ok=True)
    controller, stdin = pty.openpty()
    try:
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(  # noqa: S603 - the pinned Inspector
                inspector_argv(npm_dir, url, *extra),
                env=node_env(home, npm_dir, MCP_AUTO_OPEN_ENABLED="false", **(env or {})),
                cwd=home, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True,
            )
        try:
            deadline = time.monotonic() + CLI_TIMEOUT
            while not any(marker in line for line in err.read_text().splitlines(True)
                          if line.endswith("\n")):
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    finally:
        os.close(stdin)
        os.close(controller)
    return out.read_text(), err.read_text(), proc.returncode


def envelope(stderr: str) -> dict:
    """The Inspector's error envelope: the last line of its stderr, as JSON."""
    lines = stderr.strip().splitlines()
    assert lines, "no stderr"
    return json.loads(lines[-1])
