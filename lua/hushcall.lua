-- hushcall — NOMYO's end-to-end encrypted chat protocol for Lua 5.4.
-- A thin layer over the C module hushcall.core (bindings/lua/): it only
-- splits the per-call options out of a request table and shapes the
-- arguments of stream() and request(). Everything else, serialization into
-- locked memory included, happens in C.
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
local CALL_OPTIONS = { security_tier = true, api_key = true, base_url = true, path = true }

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

-- `body` asking for a stream: itself when it already does, else a shallow
-- copy with stream = true (the caller's table is left alone).
local function streamed(body)
  local stream = rawget(body, "stream")
  if stream == true then return body end
  if stream ~= nil then
    error(("bad argument #1 to 'stream' (stream: true or nil expected, got %s)")
          :format(tostring(stream)), 0)
  end
  local copy = {}
  for k, v in next, body do copy[k] = v end
  copy.stream = true
  return copy
end

local methods = core.client_methods

-- client:create{...}: the response, or nil, err.
function methods.create(self, request)
  local body, opts = split("create", request)
  return core.create(self, body, opts)
end

-- client:submit{...}: the call, at once, or nil, err; with stream = true a
-- streamed call, whose chunks call:next_chunk() takes.
function methods.submit(self, request)
  local body, opts = split("submit", request)
  return core.submit(self, body, opts)
end

-- client:stream{...}: the stream as a generic for wants it (iterator, nil,
-- nil, closing value), so that `for chunk in client:stream{...}` cancels the
-- call when the loop is left early; or nil, err.
function methods.stream(self, request)
  local body, opts = split("stream", request)
  local stream, err = core.stream(self, streamed(body), opts)
  if not stream then return nil, err end
  return stream, nil, nil, stream
end

-- Members of client:request's argument table other than the call options.
local REQUEST_FIELDS = { method = true, path = true, body = true }

-- client:request{ method = "POST" | "GET", path = "/v1/...", body = {...} }:
-- any endpoint (POST sealed, GET in plaintext as EHBP 7.4 requires); the
-- response, or nil, err. method defaults to POST with a body, GET without.
function methods.request(self, args)
  if type(args) ~= "table" then
    error(("bad argument #1 to 'request' (table expected, got %s)"):format(type(args)), 0)
  end
  local opts = {}
  for k, v in next, args do
    if not (REQUEST_FIELDS[k] or CALL_OPTIONS[k]) then
      error(("bad argument #1 to 'request' (unknown field '%s')"):format(tostring(k)), 0)
    end
    if k ~= "body" then opts[k] = v end
  end
  if opts.path == nil then
    error("bad argument #1 to 'request' (path: string expected, got nil)", 0)
  end
  if opts.method == nil then opts.method = args.body ~= nil and "POST" or "GET" end
  return core.create(self, args.body, opts)
end

return M
