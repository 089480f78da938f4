"""The MCP conformance suite (@modelcontextprotocol/conformance, pinned with node 22 in
conformance/package.json) against mcp-backend directly: the suite sends no custom headers, so it
cannot pass keyward's key check. Installed from npm into a temporary directory during the
session; skipped, saying why, when the registry cannot be reached.

The suite's server scenarios are written for its reference test server: most call tools,
resources and prompts by the names that server has (test_simple_text, ...). mcp-backend serves
only its twelve health tools, so those scenarios are expected to fail; the ones about the
protocol itself must pass."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from background_installs import install

pytestmark = pytest.mark.conformance

# The active server suite of conformance 0.1.16.
PASS = [
    "server-initialize",
    "ping",
    "completion-complete",
    "tools-list",
    "resources-list",
    "prompts-list",
    "dns-rebinding-protection",
]
# Scenarios that only warn against a stateless server: run, and must not fail.
ONLY_WARN = {
    "server-sse-multiple-streams": "mcp-backend is stateless: no session id, so the suite warns",
}
NOT_FOR_THIS_SERVER = "needs the suite's reference server"
EXPECTED_FAILURES = {
    "logging-set-level": "mcp-backend declares no logging capability (-32601 logging/setLevel)",
    **{
        name: f"{NOT_FOR_THIS_SERVER}: tool test_* (mcp-backend has only the health tools)"
        for name in [
            "tools-call-simple-text", "tools-call-image", "tools-call-audio",
            "tools-call-embedded-resource", "tools-call-mixed-content",
            "tools-call-with-logging", "tools-call-error", "tools-call-with-progress",
            "tools-call-sampling", "tools-call-elicitation", "elicitation-sep1034-defaults",
            "elicitation-sep1330-enums",
        ]
    },
    **{
        name: f"{NOT_FOR_THIS_SERVER}: its resources (mcp-backend serves none)"
        for name in [
            "resources-read-text", "resources-read-binary", "resources-templates-read",
            "resources-subscribe", "resources-unsubscribe",
        ]
    },
    **{
        name: f"{NOT_FOR_THIS_SERVER}: its prompts (mcp-backend serves none)"
        for name in [
            "prompts-get-simple", "prompts-get-with-args", "prompts-get-embedded-resource",
            "prompts-get-with-image",
        ]
    },
}
SUITE_TIMEOUT = 120


@pytest.fixture(scope="module")
def results(pod, tmp_path_factory):
    """Runs the active server suite once against the shared pod's backend; returns each
    scenario's checks by name."""
    directory = install("conformance").wait()
    out = tmp_path_factory.mktemp("conformance")
    bin_dir = directory / "node_modules" / ".bin"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        done = subprocess.run(
            [str(bin_dir / "conformance"), "server", "--url", pod.backend_url, "-o", str(out)],
            env=env, cwd=directory, capture_output=True, text=True, timeout=SUITE_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the conformance suite took over {SUITE_TIMEOUT}s")
    checks = {}
    for scenario in PASS + list(ONLY_WARN) + list(EXPECTED_FAILURES):
        pattern = re.compile(rf"^server-{re.escape(scenario)}-\d{{4}}-\d{{2}}-\d{{2}}T")
        runs = sorted(d for d in out.iterdir() if pattern.match(d.name))
        if runs and (runs[-1] / "checks.json").exists():
            checks[scenario] = json.loads((runs[-1] / "checks.json").read_text())
    if not checks:
        pytest.fail(f"the conformance suite produced no results:\n{done.stdout[-2000:]}"
                    f"\n{done.stderr[-2000:]}")
    return checks


def failures(checks: list[dict]) -> list[str]:
    return [f"{c.get('id')}: {c.get('errorMessage', '')}" for c in checks
            if c.get("status") == "FAILURE"]


@pytest.mark.parametrize("scenario", PASS)
def test_scenario_passes(results, scenario):
    assert scenario in results, f"{scenario} did not run"
    assert not failures(results[scenario]), failures(results[scenario])


@pytest.mark.parametrize("scenario", sorted(ONLY_WARN))
def test_scenario_does_not_apply_but_does_not_fail(results, scenario):
    assert scenario in results, f"{scenario} did not run"
    assert not failures(results[scenario]), failures(results[scenario])
    warned = [c.get("id") for c in results[scenario] if c.get("status") == "WARNING"]
    if warned:
        pytest.skip(f"{ONLY_WARN[scenario]} ({', '.join(warned)})")


@pytest.mark.parametrize("scenario", sorted(EXPECTED_FAILURES))
def test_scenario_for_the_reference_server(results, scenario):
    assert scenario in results, f"{scenario} did not run"
    failed = failures(results[scenario])
    if failed:
        pytest.xfail(f"{EXPECTED_FAILURES[scenario]}; {failed[0][:160]}")
