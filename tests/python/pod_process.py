"""The pod's processes: where the binaries are, loopback ports, one started binary with its
output in a log file (Child), and the JSON lines the binaries log."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

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
