-- The bearer-token row's request: a GET with `Authorization: Bearer <token>`, the token read
-- once from the file KEYWARD_BENCH_TOKEN_FILE names (so that it is on no command line and in
-- no environment); the summary is latency.lua's (loaded from beside this file).
local path = os.getenv("KEYWARD_BENCH_TOKEN_FILE")
local file = path and io.open(path, "r")
if not file then
   error("KEYWARD_BENCH_TOKEN_FILE does not name a readable file")
end
local token = file:read("*l")
file:close()
wrk.headers["Authorization"] = "Bearer " .. token

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "latency.lua")
