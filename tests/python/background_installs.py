"""Installs the second client, the conformance suite and the third-party MCP software need, run
in the background from the moment pytest knows it will run those tests, so they overlap the
other tests. Each runs in its own process group under a temporary directory, bounded in time; a
test that needs one calls `install(name).wait()`, which skips the test, saying why, when the
install failed (registry unreachable)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
INSTALL_TIMEOUT = 120  # seconds, per install (within the tests' own timeout)


class Install:
    """Runs a few commands in a background thread, each in its own process group, bounded in
    time. `wait()` returns the directory, or skips the calling test saying why it failed."""

    def __init__(self, what: str, directory: Path, steps: list[list[str]], env=None):
        self.what = what
        self.dir = directory
        self.steps = steps
        self.env = env
        self.error: str | None = None
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, name=f"install {what}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + INSTALL_TIMEOUT
        try:
            for argv in self.steps:
                self._proc = subprocess.Popen(
                    argv, cwd=self.dir, env=self.env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                    start_new_session=True,
                )
                try:
                    output, _ = self._proc.communicate(timeout=max(1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.kill()
                    self._proc.communicate()
                    self.error = f"`{' '.join(argv[:3])} ...` took over {INSTALL_TIMEOUT}s"
                    return
                if self._proc.returncode != 0:
                    lines = output.strip().splitlines()
                    errors = [line for line in lines if "error" in line.lower()] or lines
                    tail = " | ".join(errors[:2])[:400]
                    self.error = f"`{' '.join(argv[:3])} ...` failed: {tail}"
                    return
        except OSError as err:
            self.error = f"cannot run {self.steps[0][0]}: {err}"

    def kill(self) -> None:
        if self._proc and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait(self) -> Path:
        self._thread.join(INSTALL_TIMEOUT + 10)
        if self._thread.is_alive():
            self.kill()
            pytest.skip(f"{self.what}: install did not finish")
        if self.error:
            pytest.skip(f"{self.what} could not be installed here (registry unreachable?): {self.error}")
        return self.dir


_installs: dict[str, Install] = {}
_scratch: Path | None = None


def _scratch_dir() -> Path:
    global _scratch
    if _scratch is None:
        _scratch = Path(tempfile.mkdtemp(prefix="keyward-pytest-"))
    return _scratch


def _start_mcp2_install() -> Install:
    directory = _scratch_dir() / "mcp2"
    directory.mkdir()
    python = directory / "venv" / "bin" / "python"
    return Install(
        "MCP Python SDK 2.x",
        directory,
        [
            [sys.executable, "-m", "venv", str(directory / "venv")],
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "--retries", "1", "--timeout", "30", "-r", str(HERE / "mcp2" / "requirements.txt")],
        ],
    )


def _npm_install(what: str, name: str, node_check: str) -> Install:
    """Installs tests/python/<name>/package.json into a scratch directory, then runs
    `node_check` with the node it installed (the `node` package pins a newer one than the
    machine's)."""
    npm = shutil.which("npm")
    directory = _scratch_dir() / name
    directory.mkdir()
    shutil.copy(HERE / name / "package.json", directory / "package.json")
    node = str(directory / "node_modules" / ".bin" / "node")
    steps = [
        # Few, short retries: an unreachable registry fails in seconds, not minutes.
        [npm or "npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
         "--fetch-retries=1", "--fetch-retry-mintimeout=1000", "--fetch-retry-maxtimeout=3000",
         "--fetch-timeout=30000"],
        [node, "-e", node_check],
    ]
    return Install(what, directory, steps)


def _start_conformance_install() -> Install:
    # The suite needs node >= 22; say so plainly if its install script did not provide it.
    return _npm_install("MCP conformance suite (npm)", "conformance",
                        "process.exit(+process.versions.node.split('.')[0] >= 22 ? 0 : 1)")


def _start_everything_install() -> Install:
    # The Inspector needs node >= 22.19.
    return _npm_install("server-everything and the MCP Inspector (npm)", "everything",
                        "const [a, b] = process.versions.node.split('.').map(Number);"
                        " process.exit(a > 22 || (a === 22 && b >= 19) ? 0 : 1)")


def install(name: str) -> Install:
    if name not in _installs:
        _installs[name] = {"mcp2": _start_mcp2_install,
                           "conformance": _start_conformance_install,
                           "everything": _start_everything_install}[name]()
    return _installs[name]


def names() -> tuple[str, ...]:
    return ("mcp2", "conformance", "everything")


def cleanup() -> None:
    """Stops what is still installing and removes the temporary directory."""
    for job in _installs.values():
        job.kill()
    if _scratch is not None:
        shutil.rmtree(_scratch, ignore_errors=True)
