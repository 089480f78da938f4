"""Fixtures for the Python black-box suites: local pods started with pod.py from the binaries in
target/debug; and the hooks that start the second client's and the conformance suite's installs
(background_installs.py) once the collected tests need them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import background_installs  # noqa: E402
import pod as podlib  # noqa: E402
from recording_backend import RecordingBackend  # noqa: E402

ROOT = podlib.ROOT
TEST_TIMEOUT = 150  # seconds, per test (pytest-timeout)


def pytest_configure(config):
    config.addinivalue_line("markers", "mcp2: needs the MCP Python SDK 2.x venv (PyPI)")
    config.addinivalue_line("markers", "conformance: needs the MCP conformance suite (npm)")
    config.addinivalue_line("markers", "everything: needs server-everything, Inspector (npm)")


def pytest_collection_modifyitems(config, items):
    mine = [item for item in items if HERE in item.path.resolve().parents]
    for item in mine:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT))
    # The tests that wait for an install run last; the installs start once collection is
    # done (pytest_collection_finish), so they proceed while the other tests run.
    late = [i for i in items if i.get_closest_marker("mcp2") or i.get_closest_marker("conformance")
            or i.get_closest_marker("everything")]
    items[:] = [i for i in items if i not in late] + late


def pytest_collection_finish(session):
    if session.config.option.collectonly:
        return
    for name in background_installs.names():
        if any(item.get_closest_marker(name) for item in session.items):
            background_installs.install(name)


def pytest_unconfigure(config):
    background_installs.cleanup()


# ---------------------------------------------------------------------------------------------
# Binaries and pods


@pytest.fixture(scope="session")
def bins() -> Path:
    """The debug binaries, built (or found up to date) once per session. KEYWARD_PREBUILT=1
    skips the cargo call for a caller that has just built them."""
    if os.environ.get("KEYWARD_PREBUILT") != "1":
        build = subprocess.run(
            ["cargo", "build", "--workspace", "--bins", "--locked", "--quiet"],
            cwd=ROOT, capture_output=True, text=True, timeout=1800,
        )
        if build.returncode != 0:
            pytest.fail(f"cargo build --workspace --bins failed:\n{build.stderr[-3000:]}")
    directory = podlib.bin_dir()
    for name in ("keyward", "mcp-backend", "health-api", "fake-azure"):
        assert os.access(directory / name, os.X_OK), f"{directory / name} is missing"
    return directory


@pytest.fixture(scope="session")
def pod(bins, tmp_path_factory):
    """The pod every read-only test shares: file secrets, free ports."""
    with podlib.Pod(tmp_path_factory.mktemp("pod"), ports="auto", bins=bins) as running:
        yield running


@pytest.fixture()
def recording_pod(bins, tmp_path):
    """A pod whose keyward forwards to a recording hop in front of the real mcp-backend."""
    with RecordingBackend() as recorder:
        with podlib.Pod(tmp_path / "pod", ports="auto", bins=bins,
                        ingress_backend=recorder.addr) as running:
            recorder.target = running.backend_addr
            yield running, recorder


@pytest.fixture()
def keyvault_pod(bins, tmp_path):
    """A pod whose keyward reads its secrets from fake-azure's Key Vault."""
    with podlib.Pod(tmp_path / "pod", ports="auto", bins=bins, keyvault=True) as running:
        yield running
