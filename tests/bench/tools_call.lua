-- The grant rows' request: a JSON-RPC tools/call of a tool the granted client may call, POSTed
-- as an MCP client would; the summary is latency.lua's (loaded from beside this file).
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call",'
   .. '"params":{"name":"get_activity_by_date","arguments":{"date":"2025-02-02"}}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "latency.lua")
