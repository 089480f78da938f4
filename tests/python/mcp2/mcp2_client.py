"""Runs one MCP session with the official MCP Python SDK 2.x, in its own venv.

    python mcp2_client.py URL [--mode auto|legacy]

The client key comes from the environment (MCP_CLIENT_KEY), never from the command line; without
it no X-Api-Key is sent. Prints one JSON object: the negotiated protocol version, the server's
name, the tool names and a tools/call result. On failure it exits 1 and prints
{"error": ..., "statuses": [...]} with the HTTP statuses it received.
"""

import argparse
import asyncio
import json
import os
import sys

from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


# Every HTTP status the client received, in order: 2.x reports a refused request as an MCP
# error without its status, so the status is taken from the HTTP client itself.
SEEN: list = []


async def _record(response) -> None:
    SEEN.append(response.status_code)


async def session(url: str, mode: str) -> dict:
    key = os.environ.get("MCP_CLIENT_KEY")
    http = create_mcp_http_client(headers={"X-Api-Key": key} if key else {})
    http.event_hooks["response"].append(_record)
    async with http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            tools = await client.list_tools()
            call = await client.call_tool("get_vitals_by_date", {"date": "2025-06-15"})
            bad = await client.call_tool("get_sleep_by_date", {"date": "15/06/2025"})
            return {
                "protocol_version": client.protocol_version,
                "server_name": client.server_info.name if client.server_info else None,
                "tools": sorted(tool.name for tool in tools.tools),
                "call": {"is_error": bool(call.is_error), "text": call.content[0].text},
                "bad_date": {"is_error": bool(bad.is_error), "text": bad.content[0].text},
                "http_statuses": SEEN,
            }


def statuses(error: BaseException) -> list:
    found, stack, seen = [], [error], set()
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        response = getattr(current, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            found.append(status)
        for word in str(current).split():
            if word.isdigit() and len(word) == 3 and word[0] in "45":
                found.append(int(word))
        stack.extend(getattr(current, "exceptions", ()))
        stack.extend([current.__cause__, current.__context__])
    return sorted(set(found))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--mode", default="auto")
    args = parser.parse_args()
    try:
        result = asyncio.run(asyncio.wait_for(session(args.url, args.mode), 60))
    except BaseException as error:  # noqa: BLE001 - reported as JSON
        found = sorted(set(statuses(error)) | set(SEEN))
        print(json.dumps({"error": repr(error)[:500], "statuses": found, "http_statuses": SEEN}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
