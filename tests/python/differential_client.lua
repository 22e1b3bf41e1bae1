-- differential_client.lua — the Lua client's side of test_differential.py.
--
--   lua5.4 differential_client.lua KEY_DIR BASE_URL VARIANT...
--
-- One chat request per variant to BASE_URL/v/VARIANT; one JSON line per
-- variant: {"variant", "ok": true, "answer": <typed>} or {"variant", "ok":
-- false, "kind", "message"}. <typed> keeps what plain JSON would lose
-- (integer or float, array or object): ["int", "42"], ["float", "%.17g"],
-- ["str", s], ["bool", b], ["null"], ["array", [...]], ["object", [[k, v]...]]
-- with members sorted by key.
local hushcall = require "hushcall"

local key_dir, base_url = arg[1], arg[2]
local ARRAY_MT = getmetatable(hushcall.array{})

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

local typed

local function typed_members(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = "[" .. quote(k) .. "," .. typed(t[k]) .. "]" end
  return '["object",[' .. table.concat(parts, ",") .. "]]"
end

function typed(v)
  if v == hushcall.null then return '["null"]' end
  local kind = type(v)
  if kind == "boolean" then return '["bool",' .. tostring(v) .. "]" end
  if kind == "string" then return '["str",' .. quote(v) .. "]" end
  if kind == "number" then
    if math.type(v) == "integer" then return '["int","' .. string.format("%d", v) .. '"]' end
    return '["float","' .. string.format("%.17g", v) .. '"]'
  end
  if getmetatable(v) == ARRAY_MT then
    local parts = {}
    for i = 1, #v do parts[i] = typed(v[i]) end
    return '["array",[' .. table.concat(parts, ",") .. "]]"
  end
  return typed_members(v)
end

local client = assert(hushcall.new{ base_url = base_url, allow_http = true, key_dir = key_dir,
                                    max_retries = 0 })
for i = 3, #arg do
  local variant = arg[i]
  local resp, err = client:create{
    model = "differential",
    messages = { { role = "user", content = "hi" } },
    base_url = base_url .. "/v/" .. variant,
  }
  if resp then
    print('{"variant":' .. quote(variant) .. ',"ok":true,"answer":' .. typed(resp:totable()) .. "}")
  else
    print('{"variant":' .. quote(variant) .. ',"ok":false,"kind":' .. quote(err.kind) ..
          ',"message":' .. quote(err.message) .. "}")
  end
end
