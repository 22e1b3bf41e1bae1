-- test_attest_v2.lua — attest, then send (docs/attestation.md "Attest, then
-- send (protocol v2)") through the Lua binding: against the independent EHBP
-- peer attesting with a swtpm of its own (ehbp_server.py --tpm, over HTTPS),
-- a client made with require_attestation (or a call of the maximum tier)
-- verifies the quote over the key configs before it seals anything, and each
-- answer's quote; each attack the peer's attest controls stage is refused
-- with err.kind == "attestation", nothing sent for those caught before
-- sealing (the peer's POST count says so); and a verified call against the
-- gateway run with --tpm.
local t = require "tap"
local h = require "helpers"
local hushcall = require "hushcall"

local function need(name)
  local v = os.getenv(name)
  assert(v and v ~= "", name .. " is not set: run the tests through tests/lua/run.py")
  return v
end

local peer_url = need("HUSH_EHBP_TPM_PEER_URL")
local peer_aik = need("HUSH_EHBP_TPM_PEER_AIK_FINGERPRINT")
local peer_ca = need("HUSH_EHBP_TPM_PEER_CA")
local gateway_url = need("HUSH_TPM_GATEWAY_URL")
local gateway_aik = need("HUSH_TPM_GATEWAY_AIK_FINGERPRINT")
local tmp = need("HUSH_TEST_TMP")

local function write_file(name, text)
  local path = tmp .. "/" .. name
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

local function pin_policy(name, fingerprint)
  return write_file(name, string.format('{"aik_fingerprints": ["%s"]}', fingerprint))
end

local peer_policy = pin_policy("v2-policy-peer.json", peer_aik)
local gateway_policy = pin_policy("v2-policy-gateway.json", gateway_aik)

-- POST <peer>/__control; its answer's counters: posts and attestations served.
local function control(json)
  local cmd = h.plain .. "curl -sS --max-time 10 --cacert " .. peer_ca .. " -X POST "
      .. "-H 'Content-Type: application/json' -d '" .. json .. "' " .. peer_url .. "/__control"
  local p = assert(io.popen(cmd))
  local text = p:read("a")
  p:close()
  local posts = text:match('"posts":%s*(%d+)')
  local attestations = text:match('"attestations":%s*(%d+)')
  assert(posts and attestations, "POST /__control " .. json .. " answered: " .. text)
  return { posts = math.tointeger(tonumber(posts)),
           attestations = math.tointeger(tonumber(attestations)) }
end

local function counts()
  return control("{}")
end

-- A fresh client, so that no verified config is cached yet.
local function attested_client(extra)
  local opts = { base_url = peer_url, ca_file = peer_ca, protocol = "v2", max_retries = 0,
                 require_attestation = true, attestation_policy = peer_policy }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return assert(hushcall.new(opts))
end

local function content(resp)
  return resp.choices[1].message.content
end

local function check_verified(att, fingerprint)
  t.eq(att.verified, true)
  t.eq(att.reason, "ok")
  t.eq(att.aik_fingerprint, fingerprint)
  t.eq(att.key_config_verified, true)
end

-- The attack `order` staged: a fresh client's call fails with
-- err.kind == "attestation" naming `reason`, and `posts` POSTs reached the peer.
local function check_refused(order, reason, posts, client)
  client = client or attested_client()
  control('{"attest": ' .. order .. '}')
  local before = counts()
  local resp, err = client:create(h.chat("never sealed " .. order))
  local after = control('{"attest": {}}')
  t.eq(resp, nil)
  t.ok(err, "an error")
  t.eq(err.kind, "attestation")
  t.ok(err.message:find(reason, 1, true), "the message names the reason: " .. err.message)
  t.not_contains(err.message, "never sealed")
  t.eq(after.posts - before.posts, posts, "POSTs the peer saw")
end

t.test("a verified call: the config attested before sealing, the answer quoted", function()
  local before = counts()
  local c = attested_client()
  local resp, err = c:create(h.chat("attested over v2"))
  t.ok(resp, tostring(err))
  t.eq(content(resp), "echo: attested over v2")
  t.eq(resp._metadata.protocol, "v2")
  check_verified(resp._metadata.attestation, peer_aik)
  local after = counts()
  t.eq(after.attestations - before.attestations, 1, "key-config attestations served")
  t.eq(after.posts - before.posts, 1, "POSTs")

  resp, err = c:create(h.chat("again"))
  t.ok(resp, tostring(err))
  check_verified(resp._metadata.attestation, peer_aik)
  t.eq(counts().attestations, after.attestations, "the verified config is reused")
end)

t.test("a verified stream", function()
  local before = counts()
  local words = {}
  for chunk in assert(attested_client():stream(h.chat("a quoted stream"))) do
    local choice = chunk.choices[1]
    local delta = choice and choice.delta.content
    if type(delta) == "string" then words[#words + 1] = delta end
  end
  t.eq(table.concat(words), "echo: a quoted stream")
  local after = counts()
  t.eq(after.attestations - before.attestations, 1)
  t.eq(after.posts - before.posts, 1)
end)

t.test("a quote made for another nonce: refused, nothing sent", function()
  check_refused('{"stale_nonce": true}', "wrong qualifying data", 0)
end)

t.test("a quote over other configs: refused, nothing sent", function()
  check_refused('{"other_configs": true}', "wrong qualifying data", 0)
end)

t.test("the attestation endpoint gone: refused, nothing sent", function()
  control('{"attest": {"unavailable": true}}')
  local before = counts()
  local resp, err = attested_client():create(h.chat("no attestation to be had"))
  local after = control('{"attest": {}}')
  t.eq(resp, nil)
  t.ok(err, "an error")
  t.eq(err.kind, "attestation")
  t.eq(err.status, 404)
  t.eq(after.posts, before.posts, "POSTs the peer saw")
end)

t.test("an AIK the policy does not pin: refused, nothing sent", function()
  local other = attested_client({ attestation_policy = gateway_policy })
  local before = counts()
  local resp, err = other:create(h.chat("pinned elsewhere"))
  t.eq(resp, nil)
  t.eq(err.kind, "attestation")
  t.ok(err.message:find("aik not in policy", 1, true), err.message)
  t.eq(counts().posts, before.posts)
end)

t.test("a relayed answer quote: the answer wiped unread, the client usable", function()
  local c = attested_client()
  t.ok(c:create(h.chat("the exchange whose quote is relayed")))
  check_refused('{"relay_answer": true}', "wrong qualifying data", 1, c)
  local resp, err = c:create(h.chat("honest again"))
  t.ok(resp, tostring(err))
  t.eq(content(resp), "echo: honest again")
end)

t.test("an answer without its quote: refused", function()
  check_refused('{"no_answer_quote": true}', "no attestation", 1)
end)

t.test("a relayed quote on a stream: refused before the first chunk", function()
  local c = attested_client()
  t.ok(c:create(h.chat("first")))
  control('{"attest": {"relay_answer": true}}')
  local chunks = 0
  local ok, err = pcall(function()
    local stream = assert(c:stream(h.chat("a stream never released")))
    for _ in stream do chunks = chunks + 1 end
  end)
  control('{"attest": {}}')
  t.eq(ok, false)
  t.eq(type(err), "table", tostring(err))
  t.eq(err.kind, "attestation")
  t.eq(chunks, 0)
end)

t.test("the maximum tier attests without require_attestation", function()
  local c = assert(hushcall.new{ base_url = peer_url, ca_file = peer_ca, protocol = "v2",
                                 max_retries = 0, attestation_policy = peer_policy })
  local before = counts()
  local resp, err = c:create(h.chat("maximum", { security_tier = "maximum" }))
  t.ok(resp, tostring(err))
  t.eq(content(resp), "echo: maximum")
  check_verified(resp._metadata.attestation, peer_aik)
  local after = counts()
  t.eq(after.attestations - before.attestations, 1, "key-config attestations served")

  control('{"attest": {"stale_nonce": true}}')
  resp, err = assert(hushcall.new{ base_url = peer_url, ca_file = peer_ca, protocol = "v2",
                                   max_retries = 0, attestation_policy = peer_policy })
      :create(h.chat("maximum, stale", { security_tier = "maximum" }))
  local last = control('{"attest": {}}')
  t.eq(resp, nil)
  t.eq(err.kind, "attestation")
  t.eq(last.posts, after.posts, "nothing sent")
end)

t.test("the gateway with --tpm: a verified v2 call", function()
  local c = assert(hushcall.new{ base_url = gateway_url, allow_http = true, protocol = "v2",
                                 max_retries = 0, require_attestation = true,
                                 attestation_policy = gateway_policy })
  local resp, err = c:create(h.chat("attested by the gateway"))
  t.ok(resp, tostring(err))
  t.eq(content(resp), "echo: attested by the gateway")
  t.eq(resp._metadata.protocol, "v2")
  check_verified(resp._metadata.attestation, gateway_aik)
end)

t.done()
