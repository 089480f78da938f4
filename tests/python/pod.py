"""A local pod: keyward in front of mcp-backend, with the health-data API stand-in behind
keyward's egress, started from the binaries in target/debug (this module builds nothing).

    MCP client --X-Api-Key--> keyward ingress --> mcp-backend --> keyward egress --> health-api
                                                                  + Ocp-Apim-Subscription-Key

With `--keyvault`, keyward reads the same secrets from `fake-azure` (a local fake Key Vault and
Container Apps identity endpoint) instead of the secret directory.

As a library (the Python suites use it):

    with Pod(state_dir, ports="auto") as pod:
        pod.mcp_url, pod.client_key(), pod.logs()

The suites import this module only: it re-exports the pieces from the modules beside it,
pod_runner.py (Pod, Sidecar), pod_process.py (the processes and their logs), pod_state.py (the
state directory and its secrets) and pod_config.py (keyward's config).

As a CLI (`tests/pod` runs it): generates the secrets on first run, starts the pod, shows a
real MCP session through keyward's ingress, and keeps running until Ctrl-C (or `--once`).

Secret values are generated in pod_state.py, written to 0600 files in a 0700 directory, and
never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from pod_config import Client, OAuth, keyward_config, resource_url
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
from pod_runner import DEFAULT_STATE, FIXED_PORTS, Pod, Sidecar
from pod_state import (
    APIM_SECRET,
    CLIENT_ID,
    CLIENT_SECRET,
    SECRET_NAMES,
    State,
    _private_dir,
    _write_private,
    new_key,
    secret_forms,
)

# The public face: what the modules beside this one define, and the CLI.
__all__ = [
    "APIM_SECRET", "CLIENT_ID", "CLIENT_SECRET", "Child", "Client", "DEFAULT_STATE", "DEMO_DATE",
    "FIXED_PORTS", "OAuth", "Pod", "PodError", "ROOT", "SECRET_NAMES", "START_TIMEOUT",
    "STOP_TIMEOUT", "Sidecar", "State", "_child_env", "_json_line", "_log_event",
    "_private_dir", "_write_private", "bin_dir", "demo_session", "describe", "free_port",
    "keyward_config", "main", "new_key", "port_is_free", "resource_url", "secret_forms",
    "summarize",
]

DEMO_DATE = "2025-02-02"


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
