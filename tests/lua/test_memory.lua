-- test_memory.lua — the point of the binding, measured: once a response is
-- wiped (by wipe(), by <close>, or by __gc), no copy of its content is left
-- anywhere in this process's readable memory. The scan reads every readable
-- mapping through /proc/self/mem, as tests/python/test_memory.py does; a
-- control shows the same scan finds a live response, so the test can fail.
--
-- The needle is a Lua pattern ("echo: [x][y]...") whose own text never holds
-- the answer's text; each check uses its own random canary, and the checks
-- that must find nothing run before the control that must find something
-- (a found chunk is itself a copy in Lua's heap).
--
-- Streamed answers come from the EHBP peer, word by word: the canary's chunk
-- holds " <canary>" (a space before it), which the request never does.
local t = require "tap"
local h = require "helpers"
local hushcall = require "hushcall"

local client = h.peer_client(hushcall)
local ehbp_url = os.getenv("HUSH_EHBP_PEER_URL")
assert(ehbp_url and ehbp_url ~= "", "HUSH_EHBP_PEER_URL is not set: run through tests/lua/run.py")
local streamer = assert(hushcall.new{ base_url = ehbp_url, allow_http = true, protocol = "v2" })

local MAX_REGION = 512 << 20
local CHUNK = 1 << 20

local function canary()
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(24)
  f:close()
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- The pattern that finds "echo: <canary>" without containing it.
local function needle(c)
  return "echo: " .. c:gsub(".", "[%0]"), #"echo: " + #c
end

-- The pattern that finds " <canary>", a streamed word, without containing it.
local function word_needle(c)
  return " " .. c:gsub(".", "[%0]"), 1 + #c
end

-- Stream the canary as a chat answer; the chunks, unread, in a list.
local function stream_chunks(c)
  local chunks = {}
  for chunk in assert(streamer:stream(h.chat(c))) do chunks[#chunks + 1] = chunk end
  t.ok(#chunks > 2, "the answer came in chunks: " .. #chunks)
  return chunks
end

-- Counts the places where the pattern matches in readable memory.
local function scan(pattern, len)
  local maps = assert(io.open("/proc/self/maps"))
  local regions = {}
  for line in maps:lines() do
    local a, b, perms, name = line:match("^(%x+)%-(%x+) (%S+) %S+ %S+ %S+%s*(.*)$")
    if a and perms:sub(1, 1) == "r" and name ~= "[vvar]" and name ~= "[vsyscall]"
       and name ~= "[vvar_vclock]" then
      local lo, hi = tonumber(a, 16), tonumber(b, 16)
      if lo and hi and hi - lo <= MAX_REGION then regions[#regions + 1] = { lo, hi } end
    end
  end
  maps:close()
  local mem = assert(io.open("/proc/self/mem", "rb"))
  local found = 0
  for _, r in ipairs(regions) do
    local at = r[1]
    while at < r[2] do
      local n = math.min(CHUNK + len, r[2] - at)
      local data
      if mem:seek("set", at) then data = mem:read(n) end
      if data then
        local from = 1
        while true do
          local s = data:find(pattern, from)
          if not s then break end
          if s <= CHUNK or at + CHUNK >= r[2] then found = found + 1 end
          from = s + 1
        end
      end
      at = at + CHUNK
    end
  end
  mem:close()
  return found
end

local function full_gc()
  for _ = 1, 3 do collectgarbage("collect") end
end

t.test("after wipe() no copy of the answer is left", function()
  local c = canary()
  local resp = assert(client:create(h.chat(c)))
  local n = #resp.choices -- touch the view, but never read the content
  t.eq(n, 1)
  resp:wipe()
  full_gc()
  t.eq(scan(needle(c)), 0, "copies of a wiped answer")
end)

t.test("after <close> no copy of the answer is left", function()
  local c = canary()
  do
    local r <close> = assert(client:create(h.chat(c)))
    t.eq(#r.choices, 1)
  end
  full_gc()
  t.eq(scan(needle(c)), 0, "copies of a closed answer")
end)

t.test("after __gc no copy of the answer is left", function()
  local c = canary()
  local resp = assert(client:create(h.chat(c)))
  t.eq(#resp.choices, 1)
  resp = nil
  full_gc()
  t.eq(scan(needle(c)), 0, "copies of a collected answer")
end)

t.test("after iterating a stream and wiping its chunks no copy is left", function()
  local c = canary()
  for _, chunk in ipairs(stream_chunks(c)) do
    t.eq(#chunk.choices <= 1, true) -- touch the view, but never read the content
    chunk:wipe()
  end
  full_gc()
  t.eq(scan(word_needle(c)), 0, "copies of a wiped streamed answer")
end)

t.test("control: the scan finds a live streamed chunk", function()
  local c = canary()
  local chunks = stream_chunks(c)
  t.ok(scan(word_needle(c)) >= 1, "the scan did not find the live chunk")
  for _, chunk in ipairs(chunks) do chunk:wipe() end
end)

t.test("control: the scan finds a live answer", function()
  local c = canary()
  local resp = assert(client:create(h.chat(c)))
  local found = scan(needle(c))
  t.ok(found >= 1, "the scan did not find the live answer")
  resp:wipe()
end)

t.done()
