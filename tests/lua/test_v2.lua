-- test_v2.lua — hushcall.new's protocol, require_pq and v2_key_fingerprint
-- against the independent EHBP server (tests/interop/ehbp_server.py).
local t = require "tap"
local h = require "helpers"
local hushcall = require "hushcall"

local ehbp_url = os.getenv("HUSH_EHBP_PEER_URL")
assert(ehbp_url and ehbp_url ~= "", "HUSH_EHBP_PEER_URL is not set: run through tests/lua/run.py")

-- One client key for every "auto" client here, so none is left generating
-- one in the background when the state closes at exit.
local client_key = assert(hushcall.generate_keys{ bits = 2048 })

local function v2_client(extra)
  local opts = { base_url = ehbp_url, allow_http = true, max_retries = 0, client_key = client_key }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return assert(hushcall.new(opts))
end

local function control(json)
  local cmd = h.plain .. "curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -X POST "
      .. "-H 'Content-Type: application/json' -d '" .. json .. "' " .. ehbp_url .. "/__control"
  local p = assert(io.popen(cmd))
  local code = p:read("a")
  p:close()
  t.eq(code, "200", "POST /__control " .. json)
end

t.test("auto prefers the post-quantum suite", function()
  local resp, err = v2_client():create(h.chat("hello lua v2"))
  t.ok(resp, tostring(err))
  t.eq(resp.choices[1].message.content, "echo: hello lua v2")
  t.eq(resp._peer.suite, "pq")
  t.eq(resp._metadata.protocol, "v2")
  t.eq(resp._metadata.suite, "xwing-chacha20poly1305")
  t.eq(resp._metadata.status, 200)
  t.eq(resp._metadata.key_id, resp._peer.key_id)
  t.eq(#resp._metadata.server_key_fingerprint, 71)
end)

t.test("the pin is checked", function()
  local first = assert(v2_client():create(h.chat("learn the key")))
  local fp = first._metadata.server_key_fingerprint
  local resp, err = v2_client{ protocol = "v2", v2_key_fingerprint = fp }:create(h.chat("pinned"))
  t.ok(resp, tostring(err))
  local wrong = "sha256:" .. string.rep("ab", 32)
  resp, err = v2_client{ protocol = "v2", v2_key_fingerprint = wrong }:create(h.chat("wrong"))
  t.eq(resp, nil)
  t.eq(err.kind, "pin")
end)

t.test("a flipped bit fails closed, the client stays usable", function()
  local c = v2_client{ protocol = "v2" }
  control('{"misbehave": "flip-bit"}')
  local resp, err = c:create(h.chat("secret answer"))
  t.eq(resp, nil)
  t.eq(err.kind, "auth")
  t.not_contains(err.message, "secret answer")
  resp, err = c:create(h.chat("after"))
  t.ok(resp, tostring(err))
end)

t.test("require_pq with v1 is refused", function()
  t.raises(function()
    assert(hushcall.new{ base_url = ehbp_url, allow_http = true, protocol = "v1",
                         require_pq = true })
  end, "require_pq")
end)

t.test("the NOMYO peer has no v2: protocol v2 refuses, auto speaks v1", function()
  local resp, err = h.peer_client(hushcall, { protocol = "v2", client_key = client_key })
      :create(h.chat("no v2"))
  t.eq(resp, nil)
  t.contains(err.message, "no v2 key config")
  resp, err = h.peer_client(hushcall, { client_key = client_key }):create(h.chat("v1 then"))
  t.ok(resp, tostring(err))
  t.eq(resp._metadata.protocol, nil)
end)

t.done()
