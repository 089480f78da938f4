"""A second, independent MCP client through keyward: the official MCP Python SDK 2.x
(pinned in mcp2/requirements.txt), installed into its own venv under a temporary directory
during the session (it cannot share a venv with 1.x). Skipped, saying why, when PyPI cannot be
reached. In "auto" mode 2.x negotiates the 2026-07-28 revision (no initialize; Mcp-Method and
Mcp-Name headers) and in "legacy" mode the initialize handshake, both through keyward."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import pod as podlib
from background_installs import HERE, install
from mcp_calls import TOOLS

pytestmark = pytest.mark.mcp2

CLIENT = HERE / "mcp2" / "mcp2_client.py"


@pytest.fixture(scope="module")
def mcp2_python():
    if sys.version_info < (3, 10):
        pytest.skip("the MCP Python SDK 2.x needs Python 3.10 or later")
    return install("mcp2").wait() / "venv" / "bin" / "python"


@pytest.fixture(scope="module")
def own_pod(bins, tmp_path_factory):
    # Its own pod: its refused attempts do not count against the shared pod's failure limit.
    with podlib.Pod(tmp_path_factory.mktemp("pod2"), ports="auto", bins=bins) as running:
        yield running


def session(python, pod, key: str | None, mode: str) -> tuple[int, dict]:
    env = {k: v for k, v in os.environ.items() if k != "MCP_CLIENT_KEY"}
    if key is not None:
        env["MCP_CLIENT_KEY"] = key
    done = subprocess.run(
        [str(python), str(CLIENT), pod.mcp_url, "--mode", mode],
        env=env, capture_output=True, text=True, timeout=90,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output; stderr: {done.stderr[-2000:]}"
    return done.returncode, json.loads(lines[-1])


@pytest.mark.parametrize(("mode", "versions"), [
    ("auto", {"2026-07-28"}),
    ("legacy", {"2025-03-26", "2025-06-18", "2025-11-25"}),
])
def test_mcp2_client_through_keyward(mcp2_python, own_pod, mode, versions):
    status, out = session(mcp2_python, own_pod, own_pod.client_key(), mode)
    assert status == 0, out
    assert out["protocol_version"] in versions
    assert out["server_name"] == "mcp-backend"
    assert set(out["tools"]) == TOOLS
    assert out["call"]["is_error"] is False
    record = json.loads(out["call"]["text"])
    assert (record["Date"], record["DocumentType"]) == ("2025-06-15", "Vitals")
    assert "Weight" in record
    assert out["bad_date"]["is_error"] is True
    assert "error" in json.loads(out["bad_date"]["text"])
    assert set(out["http_statuses"]) <= {200, 202}


@pytest.mark.parametrize("key", [None, "not-the-key"], ids=["no-key", "wrong-key"])
def test_mcp2_client_without_the_key_is_refused(mcp2_python, own_pod, key):
    status, out = session(mcp2_python, own_pod, key, "auto")
    assert status == 1, out
    assert 401 in out["statuses"], out
    assert set(out["http_statuses"]) == {401}, out
    forms = podlib.secret_forms(own_pod.client_key())
    leaked = any(form in json.dumps(out) for form in forms)
    assert not leaked
