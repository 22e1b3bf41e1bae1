-- memory_lock_child.lua — run by test_memory_lock.lua in a child lua5.4 -W,
-- with or without locked memory to spare: whole answers (v1) and a streamed
-- one (v2) from the gateway; prints a line per answer or chunk ("text ...",
-- "locked true|false") and the process's lock failures. Lua's warnings
-- (on with -W) go to stderr.
local h = require "helpers"
local hushcall = require "hushcall"

local client_key = assert(hushcall.generate_keys{ bits = 2048 })
local function gateway_client(protocol)
  return assert(hushcall.new{ base_url = h.gateway_url, allow_http = true,
                              api_key = h.gateway_key, client_key = client_key,
                              protocol = protocol })
end

local v1 = gateway_client("v1")
for i = 1, 3 do
  local resp = assert(v1:create(h.chat("lock " .. i)))
  print("text " .. resp.choices[1].message.content)
  print("locked " .. tostring(resp:locked()))
end
local v2 = gateway_client("v2")
local words = {}
for chunk in assert(v2:stream(h.chat("streamed words"))) do
  local choice = chunk.choices[1]
  if choice and choice.delta.content then words[#words + 1] = choice.delta.content end
  print("locked " .. tostring(chunk:locked()))
end
print("text " .. table.concat(words))
print("lock_failures " .. hushcall.memory_protection_info().lock_failures)
