"""A local pod: keyward in front of mcp-backend, with the health-data API stand-in behind
keyward's egress, started from the binaries in target/debug (this module builds nothing).

    MCP client --X-Api-Key--> keyward ingress --> mcp-backend --> keyward egress --> health-api
                                                                  + Ocp-Apim-Subscription-Key

With `--keyvault`, keyward reads the same secrets from `fake-azure` (a local fake Key Vault and
Container Apps identity endpoint) instead of the secret directory.

As a library (the Python suites use it):

    with Pod(state_dir, ports="auto") as pod:
        pod.mcp_url, pod.client_key(), pod.logs()

As a CLI (`tests/pod` runs it): generates the secrets on first run, starts the pod, shows a
real MCP session through keyward's ingress, and keeps running until Ctrl-C (or `--once`).

Secret values are generated here, written to 0600 files in a 0700 directory, and never printed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import json
import os
import secrets as secrets_mod
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE = ROOT / ".local" / "pod"

CLIENT_ID = "local"
CLIENT_SECRET = "mcp-client-local"
APIM_SECRET = "apim-subscription-key"
SECRET_NAMES = (CLIENT_SECRET, APIM_SECRET)

# The demo's fixed ports; `--ports auto` picks free ones instead.
FIXED_PORTS = {"ingress": 8080, "egress": 8090, "admin": 9090, "backend": 8081, "standin": 8095}

DEMO_DATE = "2025-02-02"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class PodError(RuntimeError):
    """The pod could not start; the message says which process and why (never a value)."""


def bin_dir() -> Path:
    """Where cargo put the debug binaries (CARGO_TARGET_DIR is honoured)."""
    target = os.environ.get("CARGO_TARGET_DIR")
    base = Path(target) if target else ROOT / "target"
    if not base.is_absolute():
        base = ROOT / base
    return base / "debug"


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (bound to 0, read, closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether a listener could bind 127.0.0.1:port now (as the Rust binaries bind: with
    SO_REUSEADDR, so connections of an earlier run in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# ---------------------------------------------------------------------------------------------
# Secrets


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _write_private(path: Path, text: str) -> None:
    """Writes `text` to `path` with mode 0600 from the first byte on (replacing atomically)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.replace(tmp, path)


def new_key() -> str:
    """32 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(secrets_mod.token_bytes(32)).rstrip(b"=").decode()


@dataclass(frozen=True)
class State:
    """The pod's private state directory."""

    dir: Path

    @property
    def secrets_dir(self) -> Path:
        return self.dir / "secrets"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def client_header(self) -> Path:
        return self.dir / "client.header"

    @property
    def config(self) -> Path:
        return self.dir / "keyward.toml"

    @property
    def record(self) -> Path:
        return self.dir / "health-api.requests.jsonl"

    def secret_file(self, name: str) -> Path:
        return self.secrets_dir / name

    def ensure(self) -> bool:
        """Creates the directories and any missing secret; returns whether a secret was made."""
        _private_dir(self.dir)
        _private_dir(self.secrets_dir)
        _private_dir(self.logs_dir)
        made = False
        for name in SECRET_NAMES:
            file = self.secret_file(name)
            if not file.exists() or not file.read_text().strip():
                _write_private(file, new_key() + "\n")
                made = True
            os.chmod(file, 0o600)
        header = f"X-Api-Key: {self.secret(CLIENT_SECRET)}\n"
        if not self.client_header.exists() or self.client_header.read_text() != header:
            _write_private(self.client_header, header)
        os.chmod(self.client_header, 0o600)
        return made

    def secret(self, name: str) -> str:
        return self.secret_file(name).read_text().strip()

    def secret_values(self) -> list[str]:
        return [self.secret(name) for name in SECRET_NAMES]


def secret_forms(value: str) -> list[str]:
    """A key as stored, and the other ways its bytes could be written in a log."""
    forms = {value}
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        raw = b""
    if raw:
        forms.add(raw.hex())
        forms.add(raw.hex().upper())
        forms.add(base64.b64encode(raw).decode().rstrip("="))
    forms.add(base64.b64encode(value.encode()).decode().rstrip("="))
    return sorted(forms)


# ---------------------------------------------------------------------------------------------
# Processes


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the pod process dies (Linux), so nothing
    outlives the pod even when it is killed with SIGKILL."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


class Child:
    """One started binary, its output going to a log file."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]):
        self.name = name
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - our own binaries
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                # Its own process group: Ctrl-C reaches the pod, which stops children in order.
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        except OSError as err:
            self._log_file.close()
            raise PodError(f"cannot start {name} ({argv[0]}): {err.strerror}") from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_line(self, predicate, timeout: float = START_TIMEOUT):
        """The first value `predicate(line)` returns that is not None, from the child's output."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            text = self.output()
            lines = text.splitlines()
            # Only complete lines: the last one may still be being written.
            complete = lines if text.endswith("\n") else lines[:-1]
            for line in complete[seen:]:
                value = predicate(line)
                if value is not None:
                    return value
            seen = len(complete)
            if not self.alive():
                raise PodError(
                    f"{self.name} exited with status {self.proc.returncode} before it was ready; "
                    f"its log is {self.log}\n{_tail(self.output())}"
                )
            if time.monotonic() > deadline:
                raise PodError(f"{self.name} was not ready after {timeout:.0f}s; see {self.log}")
            time.sleep(0.05)

    def terminate(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def reap(self, deadline: float) -> None:
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
        self._log_file.close()


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _json_line(line: str) -> dict | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _log_event(message: str):
    """A predicate for a tracing JSON line with `message`; returns its fields."""

    def predicate(line: str) -> dict | None:
        event = _json_line(line)
        if not event:
            return None
        fields = dict(event.get("fields") or {})
        fields.update({k: v for k, v in event.items() if k != "fields"})
        return fields if fields.get("message") == message else None

    return predicate


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # Default (info) logging: nothing below it, where dependencies might say more.
    env.pop("RUST_LOG", None)
    for name in list(env):
        if name.startswith(("IDENTITY_", "AZURE_", "KEYWARD_", "MCP_BACKEND_", "HEALTH_API")):
            env.pop(name)
    env.update(extra or {})
    return env


# ---------------------------------------------------------------------------------------------
# The pod


def keyward_config(
    *,
    ingress: str,
    egress: str,
    admin: str,
    backend: str,
    upstream: str,
    state: State,
    vault: dict | None = None,
) -> str:
    def q(value) -> str:
        """A TOML basic string (JSON's escapes are TOML's)."""
        return json.dumps(str(value))

    if vault is None:
        source = f'source = "file"\ndir = {q(state.secrets_dir)}\nwatch_interval = "1s"\n'
    else:
        source = (
            'source = "keyvault"\n'
            f'vault_url = {q(vault["vault_url"])}\n'
            'vault_address = "127.0.0.1"\n'
            f'ca_file = {q(vault["ca_file"])}\n'
            'credential = "managed_identity"\n'
            'refresh_interval = "5s"\n'
        )
    return f"""# Written by tests/python/pod.py for the local pod: names and places, no secret values.
[ingress]
listen = {q(ingress)}
backend = {q("http://" + backend)}
shutdown_grace = "2s"

[[ingress.clients]]
id = "{CLIENT_ID}"
secret = "{CLIENT_SECRET}"

[egress]
listen = {q(egress)}

[[egress.routes]]
prefix = "/health/"
upstream = {q("http://" + upstream + "/biotrackr/")}
header = "Ocp-Apim-Subscription-Key"
secret = "{APIM_SECRET}"
timeout = "10s"

[admin]
listen = {q(admin)}

[secrets]
{source}
[telemetry]
log_format = "json"
"""


class Pod:
    """Starts health-api, (fake-azure,) keyward and mcp-backend; `stop()` ends every one.

    ports: "fixed" (the demo's 8080/8090/9090/8081/8095) or "auto" (free ones).
    ingress_backend: host:port keyward forwards to instead of mcp-backend (a test's recorder,
    which can then forward to `backend_addr`).
    """

    def __init__(
        self,
        state_dir: Path | str = DEFAULT_STATE,
        *,
        ports: str = "auto",
        keyvault: bool = False,
        ingress_backend: str | None = None,
        bins: Path | None = None,
    ):
        if ports not in ("auto", "fixed"):
            raise ValueError("ports is 'auto' or 'fixed'")
        self.state = State(Path(state_dir).resolve())
        self.ports = ports
        self.keyvault = keyvault
        self.ingress_backend = ingress_backend
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

    def client_key(self) -> str:
        return self.state.secret(CLIENT_SECRET)

    def secret_values(self) -> list[str]:
        return self.state.secret_values()

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
        self.made_secrets = self.state.ensure()
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

        standin = self._spawn(
            "health-api",
            [
                self._binary("health-api"),
                "--listen", f"127.0.0.1:{port['standin']}",
                "--key-file", str(self.state.secret_file(APIM_SECRET)),
                "--prefix", "/biotrackr/",
                "--record", str(self.state.record),
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
    """

    def __init__(self, state_dir: Path | str, *, backend: str, bins: Path | None = None):
        super().__init__(state_dir, ports="auto", ingress_backend=backend, bins=bins)
        self.backend_addr = backend

    def _start_once(self, timeout: float) -> Pod:
        self.made_secrets = self.state.ensure()
        self.state.config.write_text(
            keyward_config(
                ingress="127.0.0.1:0", egress="127.0.0.1:0", admin="127.0.0.1:0",
                backend=self.ingress_backend, upstream=f"127.0.0.1:{free_port()}",
                state=self.state,
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


# ---------------------------------------------------------------------------------------------
# The demo


def _display(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    return str(path)


def describe(pod: Pod) -> str:
    header = _display(pod.state.client_header)
    source = (
        f"Key Vault fake at {pod.vault['vault_url']} (managed identity)"
        if pod.vault
        else f"files in {_display(pod.state.secrets_dir)}"
    )
    return f"""
keyward pod is up
  MCP endpoint (keyward ingress)  {pod.mcp_url}      needs X-Api-Key
  keyward admin                   {pod.admin_url}/readyz  /livez  /metrics
  keyward egress (backend only)   http://{pod.egress}/health/
  mcp-backend (behind keyward)    {pod.backend_url}
  health-data API stand-in        http://{pod.standin_addr}/biotrackr/
  secrets                         {source}
  client key header               {header} (0600; the key is never printed)
  logs                            {_display(pod.state.logs_dir)}/

Call it yourself:
  curl -sS -H @{header} \\
       -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \\
       -d '{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"get_sleep_by_date","arguments":{{"date":"{DEMO_DATE}"}}}}}}' \\
       {pod.mcp_url}
"""


def summarize(name: str, record: dict) -> str:
    """One line about a record returned by a tool."""
    date = record.get("Date")
    if "Activity" in record:
        summary = record["Activity"].get("summary", {})
        return (
            f"{date}: {summary.get('steps')} steps, {summary.get('caloriesOut')} kcal, "
            f"resting heart rate {summary.get('restingHeartRate')}"
        )
    if "Items" in record:
        return f"{record.get('TotalCount')} records, page {record.get('PageNumber')}"
    return f"{date}: {', '.join(sorted(record))}"


async def demo_session(pod: Pod, out=print) -> None:
    """initialize, tools/list and tools/call with the official MCP Python client, through
    keyward's ingress with the client key."""
    import httpx
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers = {"X-Api-Key": pod.client_key()}
    http = create_mcp_http_client(headers=headers, timeout=httpx.Timeout(30, read=60))
    async with http, streamable_http_client(pod.mcp_url, http_client=http) as (read, write, _):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out(
                f"initialize: server {init.serverInfo.name} {init.serverInfo.version}, "
                f"protocol {init.protocolVersion}"
            )
            tools = (await session.list_tools()).tools
            out(f"tools/list: {len(tools)} tools")
            for tool in tools:
                out(f"  {tool.name}")
            tool = "get_activity_by_date"
            result = await session.call_tool(tool, {"date": DEMO_DATE})
            text = "".join(c.text for c in result.content if getattr(c, "type", "") == "text")
            if result.isError:
                raise PodError(f"tools/call {tool} failed: {text}")
            out(f"tools/call {tool} {{date: {DEMO_DATE}}}: {summarize(tool, json.loads(text))}")


def _standin_summary(pod: Pod) -> str:
    seen = pod.recorded_requests()
    keyed = sum(1 for r in seen if r.get("has_subscription_key"))
    leaked = sum(1 for r in seen if r.get("has_x_api_key") or r.get("has_authorization"))
    return (
        f"health-data API stand-in saw {len(seen)} request(s): {keyed} with the subscription "
        f"key keyward added, {leaked} with a client credential"
    )


def _on_signal(signum, _frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tests/pod",
        description="Start keyward, mcp-backend and the health-data API stand-in locally and "
        "make a real MCP call through keyward.",
        epilog="tests/pod builds the debug binaries first; tests/pod --release builds and runs "
        "the release ones, tests/pod --prebuilt DIR builds nothing and runs those in DIR.",
    )
    parser.add_argument("--keyvault", action="store_true",
                        help="keyward reads its secrets from a local fake Key Vault (fake-azure)")
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE,
                        help="private state directory (default: .local/pod)")
    parser.add_argument("--ports", choices=("fixed", "auto"), default="fixed",
                        help="fixed: ingress 8080, egress 8090, admin 9090, backend 8081, "
                        "stand-in 8095; auto: free ports")
    parser.add_argument("--once", action="store_true", help="stop after the demo session")
    parser.add_argument("--bins", type=Path, default=None,
                        help="directory of the keyward, mcp-backend, health-api and fake-azure "
                        "binaries (default: target/debug; tests/pod --release and "
                        "--prebuilt DIR set it)")
    args = parser.parse_args(argv)

    import asyncio

    # SIGINT too: a shell starting us in the background may have set it to be ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    bins = args.bins.resolve() if args.bins else None
    pod = Pod(args.state, ports=args.ports, keyvault=args.keyvault, bins=bins)
    try:
        try:
            pod.start()
        except PodError as err:
            print(f"pod: {err}", file=sys.stderr)
            return 1
        if pod.made_secrets:
            print(f"generated new secrets in {_display(pod.state.secrets_dir)}")
        print(describe(pod))
        try:
            asyncio.run(asyncio.wait_for(demo_session(pod), 60))
        except Exception as err:  # noqa: BLE001 - report, stop the pod, fail
            print(f"pod: the MCP session failed: {err!r}", file=sys.stderr)
            for name, text in pod.logs().items():
                print(f"--- {name}\n{_tail(text)}", file=sys.stderr)
            return 1
        print(_standin_summary(pod))
        if args.once:
            return 0
        print("\nRunning; Ctrl-C stops everything.", flush=True)
        while not (dead := pod.dead_children()):
            time.sleep(0.5)
        print(f"pod: stopped unexpectedly: {', '.join(dead)}; logs in {pod.state.logs_dir}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping")
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pod.stop()


if __name__ == "__main__":
    sys.exit(main())
