-- hushcall — NOMYO's end-to-end encrypted chat protocol for Lua 5.4.
-- A thin layer over the C module hushcall.core (bindings/lua/): it only
-- splits the per-call options out of a request table. Everything else,
-- serialization into locked memory included, happens in C.
local core = require "hushcall.core"

local M = {
  new = core.new,
  generate_keys = core.generate_keys,
  load_keys = core.load_keys,
  memory_protection_info = core.memory_protection_info,
  fd = core.fd,
  drain = core.drain,
  array = core.array,
  object = core.object,
  null = core.null,
  version = core.version,
}

-- Request members that are options of the call, not part of the body.
local CALL_OPTIONS = { security_tier = true, api_key = true, base_url = true }

-- The body to send and the call options, without touching the caller's
-- table: a shallow copy is made only when there is something to take out
-- (its values are the caller's own, so no plaintext is duplicated).
local function split(fname, request)
  if type(request) ~= "table" then
    error(("bad argument #1 to '%s' (table expected, got %s)"):format(fname, type(request)), 0)
  end
  local opts
  for name in pairs(CALL_OPTIONS) do
    local v = rawget(request, name)
    if v ~= nil then
      opts = opts or {}
      opts[name] = v
    end
  end
  if not opts then return request, nil end
  local body = {}
  for k, v in next, request do
    if not CALL_OPTIONS[k] then body[k] = v end
  end
  return body, opts
end

local methods = core.client_methods

-- client:create{...}: the response, or nil, err.
function methods.create(self, request)
  local body, opts = split("create", request)
  return core.create(self, body, opts)
end

-- client:submit{...}: the call, at once, or nil, err.
function methods.submit(self, request)
  local body, opts = split("submit", request)
  return core.submit(self, body, opts)
end

return M
