"""Pod (health-api, fake-azure, keyward and mcp-backend) and Sidecar (keyward alone): each
process started in order and waited for, keyward's readiness, and every one stopped."""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from pod_config import Client, OAuth, keyward_config
from pod_process import (
    ROOT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Child,
    PodError,
    _child_env,
    _json_line,
    _log_event,
    _tail,
    bin_dir,
    free_port,
    port_is_free,
)
from pod_state import APIM_SECRET, CLIENT_SECRET, SECRET_NAMES, State

DEFAULT_STATE = ROOT / ".local" / "pod"

# The demo's fixed ports; `--ports auto` picks free ones instead.
FIXED_PORTS = {"ingress": 8080, "egress": 8090, "admin": 9090, "backend": 8081, "standin": 8095}


class Pod:
    """Starts health-api, (fake-azure,) keyward and mcp-backend; `stop()` ends every one.

    ports: "fixed" (the demo's 8080/8090/9090/8081/8095) or "auto" (free ones).
    ingress_backend: host:port keyward forwards to instead of mcp-backend (a test's recorder,
    which can then forward to `backend_addr`).
    oauth: bearer tokens from one issuer beside the API key (pod_config.OAuth); the ingress
    port is then picked in advance, since the resource URL names it.
    clients: more API-key clients, each with its own key and grants (pod_config.Client).
    session_secret: the name of the secret (made when missing) that binds MCP sessions to
    their client, `ingress.session_secret`; keyward draws a key per process without it.
    backend_flags: more mcp-backend arguments (`--stateful`, `--json-response`).
    ingress_safety_net, egress_safety_net: `safety_net` on that listener ("redact", "block",
    "off"); None leaves keyward's default (redact).
    leak: the stand-in's leak mode at start (`--leak`: "echo", "base64", "split", "gzip",
    "client-key"); None starts it with none. leak_value_secret: the name of the secret whose
    file the stand-in leaks in its `client-key` mode (`--leak-value-file`).
    """

    def __init__(
        self,
        state_dir: Path | str = DEFAULT_STATE,
        *,
        ports: str = "auto",
        keyvault: bool = False,
        ingress_backend: str | None = None,
        bins: Path | None = None,
        oauth: OAuth | None = None,
        clients: tuple[Client, ...] = (),
        session_secret: str | None = None,
        backend_flags: tuple[str, ...] = (),
        ingress_safety_net: str | None = None,
        egress_safety_net: str | None = None,
        leak: str | None = None,
        leak_value_secret: str | None = None,
    ):
        if ports not in ("auto", "fixed"):
            raise ValueError("ports is 'auto' or 'fixed'")
        self.state = State(Path(state_dir).resolve())
        self.ports = ports
        self.keyvault = keyvault
        self.ingress_backend = ingress_backend
        self.oauth = oauth
        self.clients = tuple(clients)
        self.session_secret = session_secret
        self.backend_flags = tuple(backend_flags)
        self.ingress_safety_net = ingress_safety_net
        self.egress_safety_net = egress_safety_net
        self.leak = leak
        self.leak_value_secret = leak_value_secret
        self.bins = bins or bin_dir()
        self.children: dict[str, Child] = {}
        self.ingress = self.egress = self.admin = None
        self.backend_addr = self.standin_addr = None
        self.vault: dict | None = None
        self.made_secrets = False

    # -- addresses ------------------------------------------------------------------------

    @property
    def mcp_url(self) -> str:
        return f"http://{self.ingress}/mcp"

    @property
    def backend_url(self) -> str:
        return f"http://{self.backend_addr}/mcp"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin}"

    def client_key(self, client: Client | None = None) -> str:
        """The pod's own client's key, or that of one of `clients`."""
        return self.state.secret(client.secret if client else CLIENT_SECRET)

    def _extra_secrets(self) -> list[str]:
        names = [client.secret for client in self.clients]
        if self.session_secret:
            names.append(self.session_secret)
        return names

    def secret_values(self) -> list[str]:
        return self.state.secret_values() + [self.state.secret(n) for n in self._extra_secrets()]

    def logs(self, *names: str) -> dict[str, str]:
        """Each child's stdout and stderr so far, by name."""
        return {n: c.output() for n, c in self.children.items() if not names or n in names}

    def recorded_requests(self) -> list[dict]:
        if not self.state.record.exists():
            return []
        return [json.loads(line) for line in self.state.record.read_text().splitlines() if line]

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Pod:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _binary(self, name: str) -> str:
        path = self.bins / name
        if not os.access(path, os.X_OK):
            raise PodError(f"{path} is missing: run `cargo build --workspace --bins` first")
        return str(path)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        child = Child(name, argv, self.state.logs_dir / f"{name}.log", _child_env(env))
        self.children[name] = child
        return child

    def start(self, timeout: float = START_TIMEOUT) -> Pod:
        attempts = 3 if self.ports == "auto" else 1
        for attempt in range(attempts):
            self.children = {}
            try:
                return self._start_once(timeout)
            except PodError as err:
                self.stop()
                # A port picked in advance may have been taken meanwhile: pick again.
                if attempt + 1 == attempts or "address" not in str(err).lower():
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> Pod:
        for name in ("health-api", "keyward", "mcp-backend") + (("fake-azure",) * self.keyvault):
            self._binary(name)
        self.made_secrets = self.state.ensure(self._extra_secrets())
        with contextlib.suppress(FileNotFoundError):
            self.state.record.unlink()

        if self.ports == "fixed":
            busy = [f"{k} {p}" for k, p in FIXED_PORTS.items() if not port_is_free(p)]
            if busy:
                raise PodError(
                    "ports in use on 127.0.0.1: " + ", ".join(busy) + "; try `--ports auto`"
                )
            port = dict(FIXED_PORTS)
        else:
            # keyward needs the backend's address and the backend keyward's egress address: the
            # backend's port is picked in advance, every other listener binds port 0.
            port = {"ingress": 0, "egress": 0, "admin": 0, "backend": free_port(), "standin": 0}
            if self.oauth:
                port["ingress"] = free_port()

        standin = self._spawn(
            "health-api",
            [
                self._binary("health-api"),
                "--listen", f"127.0.0.1:{port['standin']}",
                "--key-file", str(self.state.secret_file(APIM_SECRET)),
                "--prefix", "/biotrackr/",
                "--record", str(self.state.record),
                *(("--leak", self.leak) if self.leak else ()),
                *(
                    ("--leak-value-file", str(self.state.secret_file(self.leak_value_secret)))
                    if self.leak_value_secret
                    else ()
                ),
            ],
        )
        marker = "health-api listening on "
        self.standin_addr = standin.wait_line(
            lambda line: line.split(marker, 1)[1].strip() if marker in line else None, timeout
        )

        keyward_env = {}
        if self.keyvault:
            argv = [self._binary("fake-azure"), "--dir", str(self.state.dir / "fake-azure")]
            for name in SECRET_NAMES:
                argv += ["--secret", f"{name}=@{self.state.secret_file(name)}"]
            fake = self._spawn("fake-azure", argv)
            self.vault = fake.wait_line(
                lambda line: (e := _json_line(line)) and ("vault_url" in e and e) or None, timeout
            )
            keyward_env = {
                "IDENTITY_ENDPOINT": self.vault["identity_endpoint"],
                "IDENTITY_HEADER": self.vault["identity_header"],
            }

        self.backend_addr = f"127.0.0.1:{port['backend']}"
        self.state.config.write_text(
            keyward_config(
                ingress=f"127.0.0.1:{port['ingress']}",
                egress=f"127.0.0.1:{port['egress']}",
                admin=f"127.0.0.1:{port['admin']}",
                backend=self.ingress_backend or self.backend_addr,
                upstream=self.standin_addr,
                state=self.state,
                vault=self.vault,
                oauth=self.oauth,
                clients=self.clients,
                session_secret=self.session_secret,
                ingress_safety_net=self.ingress_safety_net,
                egress_safety_net=self.egress_safety_net,
            )
        )
        keyward = self._spawn(
            "keyward", [self._binary("keyward"), "--config", str(self.state.config)], keyward_env
        )
        listening = keyward.wait_line(_log_event("keyward listening"), timeout)
        self.ingress, self.egress, self.admin = (
            listening["ingress"], listening["egress"], listening["admin"]
        )

        backend = self._spawn(
            "mcp-backend",
            [
                self._binary("mcp-backend"),
                "--listen", self.backend_addr,
                "--health-api", f"http://{self.egress}/health/",
                *self.backend_flags,
            ],
        )
        self.backend_addr = backend.wait_line(_log_event("mcp-backend listening"), timeout)["addr"]

        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                with urllib.request.urlopen(f"{self.admin_url}/readyz", timeout=2) as reply:
                    if reply.status == 200:
                        return
                    last = f"HTTP {reply.status}"
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}: {err.read(300).decode(errors='replace')}"
            except OSError as err:
                last = str(err)
            if not self.children["keyward"].alive():
                raise PodError(f"keyward exited before it was ready:\n{_tail(self.logs()['keyward'])}")
            if time.monotonic() > deadline:
                raise PodError(f"keyward /readyz not ready after {timeout:.0f}s ({last})")
            time.sleep(0.1)

    def dead_children(self) -> list[str]:
        return [f"{n} (status {c.proc.returncode})" for n, c in self.children.items() if not c.alive()]

    def stop(self) -> None:
        """SIGTERM to every child (keyward first, so no new request gets in), then reap each;
        whatever has not exited after STOP_TIMEOUT is killed."""
        order = ["keyward", "mcp-backend", "health-api", "fake-azure"]
        children = sorted(self.children.values(), key=lambda c: order.index(c.name))
        for child in children:
            child.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in children:
            child.reap(deadline)


class Sidecar(Pod):
    """keyward alone, in front of an MCP server the caller runs at `backend` (host:port), with
    the same secrets and config as the pod; free ports. Its egress route points at a loopback
    port nothing listens on: a third-party server has no use for it.

        with Sidecar(state_dir, backend="127.0.0.1:3001") as keyward:
            keyward.mcp_url, keyward.client_key()

    With `secrets_from` (another pod's State) it reads that pod's secrets directory instead of
    making its own: a second replica of the same deployment. `clients` and `session_secret` are
    the Pod's.
    """

    def __init__(
        self,
        state_dir: Path | str,
        *,
        backend: str,
        bins: Path | None = None,
        clients: tuple[Client, ...] = (),
        session_secret: str | None = None,
        secrets_from: State | None = None,
    ):
        super().__init__(
            state_dir, ports="auto", ingress_backend=backend, bins=bins, clients=clients,
            session_secret=session_secret,
        )
        if secrets_from is not None:
            self.state = State(self.state.dir, shared_secrets=secrets_from.secrets_dir)
        self.backend_addr = backend

    def _start_once(self, timeout: float) -> Pod:
        self.made_secrets = self.state.ensure(self._extra_secrets())
        self.state.config.write_text(
            keyward_config(
                ingress="127.0.0.1:0", egress="127.0.0.1:0", admin="127.0.0.1:0",
                backend=self.ingress_backend, upstream=f"127.0.0.1:{free_port()}",
                state=self.state, clients=self.clients, session_secret=self.session_secret,
            )
        )
        keyward = self._spawn(
            "keyward", [self._binary("keyward"), "--config", str(self.state.config)]
        )
        listening = keyward.wait_line(_log_event("keyward listening"), timeout)
        self.ingress, self.egress, self.admin = (
            listening["ingress"], listening["egress"], listening["admin"]
        )
        self._wait_ready(timeout)
        return self
