"""Small helpers around the official MCP Python client (1.x) for the suites."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

DOMAINS = ("activity", "sleep", "food", "vitals")
SHAPES = ("by_date", "by_date_range", "records")
TOOLS = frozenset(f"get_{domain}_{shape}" for domain in DOMAINS for shape in SHAPES)
# Days the stand-in covers: 2024-01-01 through 2026-12-31.
COVERED_DAYS = 366 + 365 + 365


def run(coro, timeout: float = 60):
    """Runs one coroutine to completion, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


@asynccontextmanager
async def mcp_session(url: str, headers: dict[str, str] | None = None):
    """An initialized ClientSession over Streamable HTTP; yields (session, initialize result).
    Headers go on the HTTP client, as the SDK wants (its `streamablehttp_client(url, headers=)`
    spelling is deprecated in 1.30)."""
    http = create_mcp_http_client(headers=headers or {}, timeout=httpx.Timeout(30, read=60))
    async with http, streamable_http_client(url, http_client=http) as (read, write, _):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            yield session, init


def text_of(result) -> str:
    return "".join(block.text for block in result.content if getattr(block, "type", "") == "text")


def json_of(result) -> dict:
    return json.loads(text_of(result))


def statuses_in(error: BaseException) -> list[int]:
    """HTTP statuses carried by an exception, its groups and its causes."""
    found, stack, seen = [], [error], set()
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, httpx.HTTPStatusError):
            found.append(current.response.status_code)
        stack.extend(getattr(current, "exceptions", ()))
        stack.extend([current.__cause__, current.__context__])
    return found
