-- test_attest.lua — TPM 2.0 attestation (docs/attestation.md) through the Lua
-- binding: answers of the gateway run with --tpm (a software TPM) are
-- verified into resp._metadata.attestation; require_attestation refuses an
-- answer that is not attested; an attestation_policy checks PCR values.
local t = require "tap"
local h = require "helpers"
local hushcall = require "hushcall"

local tpm_url = os.getenv("HUSH_TPM_GATEWAY_URL")
assert(tpm_url and tpm_url ~= "", "HUSH_TPM_GATEWAY_URL is not set: run the tests through tests/lua/run.py")
local tmp = assert(os.getenv("HUSH_TEST_TMP"), "HUSH_TEST_TMP is not set")

local function tpm_client(extra)
  local opts = { base_url = tpm_url, allow_http = true, key_bits = 2048 }
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

-- The PCR values the TPM gateway reports, for the policies below.
local reported = {}

t.test("standard tier: the quote is verified", function()
  local resp, err = client:create(h.chat("quote me from lua"))
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
  t.eq(att.verified, true)
  t.eq(att.reason, "ok")
  t.ok(att.aik_fingerprint:match("^sha256:" .. string.rep("%x", 64) .. "$"),
       "aik_fingerprint: " .. tostring(att.aik_fingerprint))
  for _, i in ipairs({ "0", "7", "10" }) do
    t.eq(att.pcrs.sha256[i], reported[i], "attestation.pcrs.sha256." .. i)
  end
end)

t.test("require_attestation against the TPM gateway: answered", function()
  local strict = tpm_client({ require_attestation = true })
  local resp, err = strict:create(h.chat("attested"))
  t.ok(resp, tostring(err))
  t.eq(content(resp), "echo: attested")
  t.eq(resp._metadata.attestation.verified, true)
  t.eq(resp._metadata.attestation.reason, "ok")
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
  local gw = h.gateway_client(hushcall, { require_attestation = true, max_retries = 0 })
  local resp, err = gw:create(h.chat("never released"))
  t.eq(resp, nil)
  t.ok(err, "an error")
  t.eq(err.kind, "attestation")
  t.eq(type(err.message), "string")
  t.ok(err.message:find("tpm not available", 1, true),
       "the message names the reason: " .. err.message)
  t.ok(not err.message:find("never released", 1, true))
end)

t.test("policy with the reported PCR values: verified", function()
  t.ok(reported["0"], "the first test recorded the PCR values")
  local path = write_file("policy-good.json", string.format(
    '{"pcrs": {"sha256": {"0": "%s", "7": "%s", "10": "%s"}}}',
    reported["0"], reported["7"], reported["10"]))
  local c = tpm_client({ attestation_policy = path, require_attestation = true })
  local resp, err = c:create(h.chat("baseline"))
  t.ok(resp, tostring(err))
  t.eq(resp._metadata.attestation.verified, true)
  t.eq(resp._metadata.attestation.reason, "ok")
end)

t.test("policy with a mismatched PCR: not verified", function()
  local wrong = string.rep("ab", 32)
  t.ok(wrong ~= reported["0"])
  local path = write_file("policy-bad.json",
                          string.format('{"pcrs": {"sha256": {"0": "%s"}}}', wrong))
  local c = tpm_client({ attestation_policy = path })
  local resp, err = c:create(h.chat("mismatch"))
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
