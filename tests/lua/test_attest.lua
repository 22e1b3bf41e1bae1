-- test_attest.lua — TPM 2.0 attestation (docs/attestation.md) through the Lua
-- binding: the gateway run with --tpm (a software TPM, a persistent AIK)
-- quotes the high tier and answers asked for with X-Attestation; a quote is
-- verified into resp._metadata.attestation only under a policy that pins its
-- AIK ("unpinned aik" otherwise, PCR values kept); require_attestation needs
-- such a policy and refuses an answer that is not attested; an
-- attestation_policy checks PCR values.
local t = require "tap"
local h = require "helpers"
local hushcall = require "hushcall"

local tpm_url = os.getenv("HUSH_TPM_GATEWAY_URL")
assert(tpm_url and tpm_url ~= "", "HUSH_TPM_GATEWAY_URL is not set: run the tests through tests/lua/run.py")
local tmp = assert(os.getenv("HUSH_TEST_TMP"), "HUSH_TEST_TMP is not set")

-- Protocol v1: the TPM quote is v1's (v2 carries none).
local function tpm_client(extra)
  local opts = { base_url = tpm_url, allow_http = true, key_bits = 2048, protocol = "v1" }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return assert(hushcall.new(opts))
end

local function content(resp)
  return resp.choices[1].message.content
end

local function write_file(name, text)
  local path = tmp .. "/" .. name
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

local client = tpm_client()

-- What the TPM gateway reports, for the policies below.
local reported = {}
local fingerprint

local function pin_policy(name, pcrs)
  local members = { string.format('"aik_fingerprints": ["%s"]', fingerprint) }
  if pcrs then members[2] = '"pcrs": ' .. pcrs end
  return write_file(name, "{" .. table.concat(members, ", ") .. "}")
end

t.test("standard tier: not quoted", function()
  local resp, err = client:create(h.chat("no quote from lua"))
  t.ok(resp, tostring(err))
  t.eq(content(resp), "echo: no quote from lua")
  t.eq(resp._metadata.tpm_attestation.is_available, true)
  t.eq(resp._metadata.tpm_attestation.quoted, false)
  local att = resp._metadata.attestation
  t.eq(att.verified, false)
  t.eq(att.reason, "not quoted")
  t.eq(att.pcrs, hushcall.null)
end)

t.test("high tier: quoted, unpinned, the PCR values kept", function()
  local resp, err = client:create(h.chat("quote me from lua", { security_tier = "high" }))
  t.ok(resp, tostring(err))
  t.eq(content(resp), "echo: quote me from lua")
  local md = resp._metadata
  local quote = md.tpm_attestation
  t.eq(quote.is_available, true)
  t.eq(quote.pcr_banks, "sha256:0,7,10")
  for _, i in ipairs({ "0", "7", "10" }) do
    local v = quote.pcr_values.sha256[i]
    t.eq(type(v), "string")
    t.ok(#v == 64 and v:match("^%x+$"), "pcr " .. i .. " is 64 hex digits: " .. tostring(v))
    reported[i] = v
  end
  for _, name in ipairs({ "aik_pubkey_b64", "quote_b64", "signature_b64" }) do
    t.eq(type(quote[name]), "string", name)
    t.ok(#quote[name] > 0, name)
  end
  local att = md.attestation
  t.eq(att.verified, false)
  t.eq(att.reason, "unpinned aik")
  t.ok(att.aik_fingerprint:match("^sha256:" .. string.rep("%x", 64) .. "$"),
       "aik_fingerprint: " .. tostring(att.aik_fingerprint))
  fingerprint = att.aik_fingerprint
  for _, i in ipairs({ "0", "7", "10" }) do
    t.eq(att.pcrs.sha256[i], reported[i], "attestation.pcrs.sha256." .. i)
  end
end)

t.test("require_attestation without a pinned AIK: refused by new", function()
  for _, extra in ipairs({ {}, { attestation_policy = write_file("policy-nopin.json", '{"pcrs": {}}') } }) do
    local opts = { base_url = tpm_url, allow_http = true, key_bits = 2048,
                   require_attestation = true }
    for k, v in pairs(extra) do opts[k] = v end
    local c, err = hushcall.new(opts)
    t.eq(c, nil)
    t.eq(err.kind, "argument")
    t.ok(err.message:find("aik_fingerprints", 1, true), err.message)
  end
end)

t.test("require_attestation with the pinned AIK: a standard call is quoted and verified", function()
  t.ok(fingerprint, "the high-tier test learnt the fingerprint")
  local strict = tpm_client({ require_attestation = true,
                              attestation_policy = pin_policy("policy-pin.json") })
  local resp, err = strict:create(h.chat("attested"))
  t.ok(resp, tostring(err))
  t.eq(content(resp), "echo: attested")
  t.eq(resp._metadata.security_tier, "standard")
  t.eq(resp._metadata.attestation.verified, true)
  t.eq(resp._metadata.attestation.reason, "ok")
  t.eq(resp._metadata.attestation.aik_fingerprint, fingerprint)
  t.eq(resp._metadata.attestation.pcrs.sha256["7"], reported["7"])
end)

t.test("without require_attestation the plain gateway's answer is unverified", function()
  local gw = h.gateway_client(hushcall)
  local resp, err = gw:create(h.chat("plain"))
  t.ok(resp, tostring(err))
  t.eq(content(resp), "echo: plain")
  t.eq(resp._metadata.tpm_attestation.is_available, false)
  t.eq(resp._metadata.attestation.verified, false)
  t.eq(resp._metadata.attestation.reason, "tpm not available")
end)

t.test("require_attestation against the plain gateway: refused", function()
  local foreign = write_file("policy-foreign.json",
                             '{"aik_fingerprints": ["sha256:' .. string.rep("1", 64) .. '"]}')
  local gw = h.gateway_client(hushcall, { require_attestation = true, max_retries = 0,
                                          attestation_policy = foreign })
  local resp, err = gw:create(h.chat("never released"))
  t.eq(resp, nil)
  t.ok(err, "an error")
  t.eq(err.kind, "attestation")
  t.eq(type(err.message), "string")
  t.ok(err.message:find("tpm not available", 1, true),
       "the message names the reason: " .. err.message)
  t.ok(not err.message:find("never released", 1, true))
end)

t.test("policy with the pin and the reported PCR values: verified", function()
  t.ok(reported["0"], "the high-tier test recorded the PCR values")
  local path = pin_policy("policy-good.json", string.format(
    '{"sha256": {"0": "%s", "7": "%s", "10": "%s"}}', reported["0"], reported["7"], reported["10"]))
  local c = tpm_client({ attestation_policy = path, require_attestation = true })
  local resp, err = c:create(h.chat("baseline"))
  t.ok(resp, tostring(err))
  t.eq(resp._metadata.attestation.verified, true)
  t.eq(resp._metadata.attestation.reason, "ok")
end)

t.test("policy with a mismatched PCR: not verified", function()
  local wrong = string.rep("ab", 32)
  t.ok(wrong ~= reported["0"])
  local path = pin_policy("policy-bad.json", string.format('{"sha256": {"0": "%s"}}', wrong))
  local c = tpm_client({ attestation_policy = path })
  local resp, err = c:create(h.chat("mismatch", { security_tier = "high" }))
  t.ok(resp, tostring(err))
  t.eq(content(resp), "echo: mismatch")
  t.eq(resp._metadata.attestation.verified, false)
  t.eq(resp._metadata.attestation.reason, "pcr value not in policy: sha256:0")

  local strict = tpm_client({ attestation_policy = path, require_attestation = true,
                              max_retries = 0 })
  local r2, e2 = strict:create(h.chat("refused"))
  t.eq(r2, nil)
  t.eq(e2.kind, "attestation")
  t.ok(e2.message:find("pcr value not in policy: sha256:0", 1, true), e2.message)
end)

t.done()
