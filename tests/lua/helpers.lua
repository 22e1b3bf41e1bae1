-- helpers.lua — what the Lua test files share: where the servers are, the
-- peer's counters, and request builders.
local M = {}

local function need(name)
  local v = os.getenv(name)
  if not v or v == "" then
    error(name .. " is not set: run the tests through tests/lua/run.py", 0)
  end
  return v
end

M.peer_url = need("HUSH_PEER_URL")
M.gateway_url = need("HUSH_GATEWAY_URL")
M.gateway_key = need("HUSH_GATEWAY_API_KEY")

-- A prefix for commands run through io.popen/os.execute: without the
-- sanitizer runtime run.py preloads into lua5.4 for a sanitizer build.
M.plain = "env -u LD_PRELOAD "

-- GET <peer>/_stats through curl; returns the raw JSON text.
function M.stats_text()
  local p = assert(io.popen(M.plain .. "curl -sS --max-time 10 " .. M.peer_url .. "/_stats"))
  local text = p:read("a")
  local ok = p:close()
  assert(ok and text:sub(1, 1) == "{", "GET /_stats failed: " .. tostring(text))
  return text
end

-- The peer's "completions" counter (every POST, any outcome).
function M.completions()
  local n = M.stats_text():match('"completions":%s*(%d+)')
  return assert(math.tointeger(tonumber(n)), "no completions counter in /_stats")
end

-- The number of POSTs the peer saw with this X-Payload-ID (0 if none).
function M.posts_for(payload_id)
  local text = M.stats_text()
  local n = text:match('"' .. payload_id:gsub("%p", "%%%0") .. '":%s*(%d+)')
  return n and math.tointeger(tonumber(n)) or 0
end

-- A chat request whose last user message is `text`.
function M.chat(text, extra)
  local req = { model = "lua-test", messages = { { role = "user", content = text } } }
  for k, v in pairs(extra or {}) do req[k] = v end
  return req
end

-- A fresh client on the peer (2048-bit client key, to keep the run short).
function M.peer_client(hushcall, extra)
  local opts = { base_url = M.peer_url, allow_http = true, key_bits = 2048 }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return assert(hushcall.new(opts))
end

-- A client of the gateway in protocol v1, whose _metadata these tests read
-- (test_v2.lua tests v2).
function M.gateway_client(hushcall, extra)
  local opts = { base_url = M.gateway_url, allow_http = true, key_bits = 2048,
                 api_key = M.gateway_key, protocol = "v1" }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return assert(hushcall.new(opts))
end

-- Deep list of the string elements of a response array (views or tables).
function M.strings(arr)
  local out = {}
  for i = 1, #arr do out[i] = arr[i] end
  return out
end

-- True when the eventfd behind `fd` has a non-zero count, read from
-- /proc/self/fdinfo; nil when that fd is not an eventfd (cannot tell).
function M.eventfd_count(fd)
  local f = io.open("/proc/self/fdinfo/" .. fd)
  if not f then return nil end
  local text = f:read("a")
  f:close()
  local n = text:match("eventfd%-count:%s*(%x+)")
  return n and tonumber(n, 16) or nil
end

-- The number of threads of this process, from /proc/self/status.
function M.threads()
  local f = assert(io.open("/proc/self/status"))
  local text = f:read("a")
  f:close()
  return math.tointeger(tonumber(text:match("Threads:%s*(%d+)")))
end

function M.now()
  -- os.clock is CPU time; wall time at 1 s resolution is too coarse, so use
  -- the monotonic clock from /proc/uptime.
  local f = io.open("/proc/uptime")
  local up = f and f:read("n")
  if f then f:close() end
  return up or os.time()
end

return M
