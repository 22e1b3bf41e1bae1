-- test_client.lua — hushcall.new, client:create against the NOMYO peer and the
-- reference gateway, per-call options, and every kind of failure as nil, err.
local t = require "tap"
local h = require "helpers"
local hushcall = require "hushcall"

local client = h.peer_client(hushcall)
-- Failures must come back at once, unretried.
local strict = h.peer_client(hushcall, { max_retries = 0 })

local function content(resp)
  return resp.choices[1].message.content
end

local function still_usable(c, label)
  local text = "still usable after " .. label
  local resp, err = c:create(h.chat(text))
  t.ok(resp, "the client failed after " .. label .. ": " .. tostring(err))
  t.eq(content(resp), "echo: " .. text, "answer after " .. label)
end

local function sorted_strings(view)
  local out = {}
  for i = 1, #view do out[#out + 1] = view[i] end
  table.sort(out)
  return table.concat(out, ",")
end

t.test("version is a string", function()
  t.eq(type(hushcall.version), "string")
  t.ok(#hushcall.version > 0)
end)

t.test("round trip through the NOMYO peer", function()
  local resp, err = client:create{
    model = "Qwen/Qwen3-0.6B",
    messages = { { role = "system", content = "Be brief." },
                 { role = "user", content = "hello lua world" } },
    temperature = 0.2,
  }
  t.ok(resp, tostring(err))
  t.eq(err, nil)
  t.eq(content(resp), "echo: hello lua world")
  t.eq(resp.choices[1].message.role, "assistant")
  t.eq(resp.choices[1].finish_reason, "stop")
  t.eq(resp.choices[1].index, 0)
  t.eq(resp.object, "chat.completion")
  t.eq(resp.model, "Qwen/Qwen3-0.6B")
  t.eq(math.type(resp.created), "integer")
  -- 2 words of the system message + 3 of the user's; the reply has 4.
  t.eq(resp.usage.prompt_tokens, 5)
  t.eq(resp.usage.completion_tokens, 4)
  t.eq(resp.usage.total_tokens, 9)
  local md = resp._metadata
  t.eq(type(md.payload_id), "string")
  t.ok(#md.payload_id > 0)
  t.eq(md.payload_id, resp.x_seen.payload_id, "_metadata.payload_id is the X-Payload-ID")
  t.eq(resp.id, "chatcmpl-" .. md.payload_id)
  -- Unix seconds as an integer, as NOMYO sends it, and not in the future.
  t.eq(math.type(md.processed_at), "integer")
  t.ok(md.processed_at > 1700000000 and md.processed_at <= os.time(), "processed_at is Unix seconds")
  t.eq(md.is_encrypted, true)
  t.eq(md.encryption_algorithm, "hybrid-aes256-rsa4096")
  t.eq(md.server, "nomyo-peer", "the server's own _metadata members are kept")
  t.eq(sorted_strings(resp.x_seen.request_keys), "messages,model,temperature")
end)

t.test("round trip through the reference gateway", function()
  local gw = h.gateway_client(hushcall)
  local resp, err = gw:create(h.chat("through the gateway"))
  t.ok(resp, tostring(err))
  t.eq(content(resp), "echo: through the gateway")
  t.eq(resp.model, "lua-test")
  t.eq(resp.usage.prompt_tokens, 3)
  t.eq(resp.usage.completion_tokens, 4)
  t.eq(resp.usage.total_tokens, 7)
  local md = resp._metadata
  t.eq(md.server, "hushcall-gateway")
  t.eq(md.backend, "echo")
  t.eq(md.security_tier, "standard")
  t.eq(md.is_encrypted, true)
  t.eq(md.encryption_algorithm, "hybrid-aes256-rsa4096")
  t.eq(resp.id, "chatcmpl-" .. md.payload_id)
  t.eq(math.type(md.processed_at), "integer")
  t.eq(type(md.memory_protection.mlock_available), "boolean")
end)

t.test("per-call security_tier is a header, not part of the body", function()
  local resp, err = client:create(h.chat("tiered", { security_tier = "high" }))
  t.ok(resp, tostring(err))
  t.eq(resp.x_seen.security_tier, "high")
  t.eq(resp._metadata.security_tier, "high")
  t.eq(sorted_strings(resp.x_seen.request_keys), "messages,model")
  -- The client's own default when the call names none.
  local high = h.peer_client(hushcall, { security_tier = "high" })
  resp = assert(high:create(h.chat("client tier")))
  t.eq(resp.x_seen.security_tier, "high")
  resp = assert(high:create(h.chat("call tier", { security_tier = "standard" })))
  t.eq(resp.x_seen.security_tier, "standard")

  local gw = h.gateway_client(hushcall)
  resp, err = gw:create(h.chat("gateway tier", { security_tier = "high" }))
  t.ok(resp, tostring(err))
  t.eq(resp._metadata.security_tier, "high")
end)

t.test("per-call api_key and base_url are used and not sent in the body", function()
  local keyed = h.peer_client(hushcall, { api_key = "client-key" })
  local resp = assert(keyed:create(h.chat("a")))
  t.eq(resp.x_seen.authorization, "Bearer client-key")
  resp = assert(keyed:create(h.chat("b", { api_key = "call-key" })))
  t.eq(resp.x_seen.authorization, "Bearer call-key")
  t.eq(sorted_strings(resp.x_seen.request_keys), "messages,model")
  -- The client's own key again on the next call: per-call options do not stick.
  resp = assert(keyed:create(h.chat("c")))
  t.eq(resp.x_seen.authorization, "Bearer client-key")

  -- A client of the peer sends one call to the gateway.
  local err
  resp, err = client:create(h.chat("moved", { base_url = h.gateway_url,
                                              api_key = h.gateway_key,
                                              security_tier = "high" }))
  t.ok(resp, tostring(err))
  t.eq(content(resp), "echo: moved")
  -- "auto" speaks v2 to the gateway, which publishes configs, tier or not (issue 16):
  -- v2's _metadata has no NOMYO server or tier members.
  t.eq(resp._metadata.protocol, "v2")
  resp = assert(client:create(h.chat("back")))
  t.eq(resp._metadata.server, "nomyo-peer")
  t.eq(sorted_strings(resp.x_seen.request_keys), "messages,model")
end)

t.test("public_key_pem", function()
  local pem = client:public_key_pem()
  t.eq(type(pem), "string")
  t.ok(pem:match("^%-%-%-%-%-BEGIN PUBLIC KEY%-%-%-%-%-\n"), pem)
  t.ok(pem:match("%-%-%-%-%-END PUBLIC KEY%-%-%-%-%-\n?$"), pem)
end)

-- Every HTTP failure the peer can be told to give: kind, status, details.
local http_cases = {
  { x = { status = 400, detail = "bad one" }, kind = "bad_request", status = 400 },
  { x = { status = 401, detail = "nope" }, kind = "unauthorized", status = 401 },
  { x = { status = 403, detail = "not yours" }, kind = "forbidden", status = 403 },
  { x = { status = 429, detail = "slow down", retry_after = 1 }, kind = "rate_limited", status = 429 },
  { x = { status = 500, detail = "it broke" }, kind = "server", status = 500 },
  { x = { status = 503, detail = "not now" }, kind = "unavailable", status = 503 },
  { x = { status = 418, detail = "teapot" }, kind = "http", status = 418 },
  { x = { status = 502, detail = "upstream" }, kind = "http", status = 502 },
}

for _, case in ipairs(http_cases) do
  t.test(string.format("HTTP %d is nil, err of kind %s", case.status, case.kind), function()
    local secret = "secret-prompt-" .. case.status
    local before = h.completions()
    local resp, err = strict:create(h.chat(secret, { x_test = case.x }))
    t.eq(resp, nil)
    t.eq(type(err), "table")
    t.ok(getmetatable(err), "err has a metatable")
    t.eq(err.kind, case.kind)
    t.eq(err.status, case.status)
    t.eq(math.type(err.status), "integer")
    t.eq(type(err.message), "string")
    t.ok(#err.message > 0, "a message")
    t.not_contains(err.message, secret, "the message quotes the prompt")
    t.eq(type(err.details), "table")
    t.eq(err.details.detail, case.x.detail)
    t.eq(tostring(err), string.format("hushcall: %s: %s (HTTP %d)", case.kind, err.message,
                                      case.status))
    t.eq(h.completions() - before, 1, "max_retries = 0 sends one POST")
    still_usable(strict, "HTTP " .. case.status)
  end)
end

t.test("details is the whole JSON error body, null as hushcall.null", function()
  local body = '{"detail": "d", "code": 7, "extra": {"a": [1, 2.5, null], "ok": false}}'
  local resp, err = strict:create(h.chat("x", { x_test = { status = 422, body = body } }))
  t.eq(resp, nil)
  t.eq(err.kind, "http")
  t.eq(err.status, 422)
  t.eq(type(err.details), "table")
  t.eq(err.details.detail, "d")
  t.eq(err.details.code, 7)
  t.eq(math.type(err.details.code), "integer")
  t.eq(type(err.details.extra), "table")
  t.eq(err.details.extra.a[1], 1)
  t.eq(err.details.extra.a[2], 2.5)
  t.eq(err.details.extra.a[3], hushcall.null)
  t.eq(err.details.extra.ok, false)
  still_usable(strict, "a 422 with a JSON body")
end)

t.test("no api_key: no Authorization header", function()
  local resp = assert(client:create(h.chat("anonymous")))
  t.eq(resp.x_seen.authorization, hushcall.null)
end)

t.test("a non-JSON error body gives details == nil", function()
  local resp, err = strict:create(h.chat("x", { x_test = { status = 500, body = "plain words" } }))
  t.eq(resp, nil)
  t.eq(err.kind, "server")
  t.eq(err.status, 500)
  t.eq(err.details, nil)
  still_usable(strict, "a text/plain 500")
end)

t.test("a dropped connection is kind connection, without a status", function()
  local resp, err = strict:create(h.chat("dropped", { x_test = { drop = true } }))
  t.eq(resp, nil)
  t.eq(err.kind, "connection")
  t.eq(err.status, nil)
  t.eq(err.details, nil)
  t.eq(tostring(err), "hushcall: connection: " .. err.message)
  t.not_contains(tostring(err), "(HTTP")
  still_usable(strict, "a dropped connection")
end)

t.test("a refused connection is kind connection", function()
  local resp, err = strict:create(h.chat("nobody home", { base_url = "http://127.0.0.1:9" }))
  t.eq(resp, nil)
  t.eq(err.kind, "connection")
  t.eq(err.status, nil)
  still_usable(strict, "a refused connection")
end)

t.test("an answer that is not a package is kind format", function()
  local resp, err = strict:create(h.chat("garbled", { x_test = { garbage = true } }))
  t.eq(resp, nil)
  t.eq(err.kind, "format")
  t.ok(err.status == nil or err.status == 200, "status: " .. tostring(err.status))
  t.eq(err.details, nil)
  t.not_contains(err.message, "not a package", "the message quotes the body")
  still_usable(strict, "a garbage answer")
end)

t.test("an answer sealed to another key is kind auth", function()
  local resp, err = strict:create(h.chat("misdirected", { x_test = { wrong_key = true } }))
  t.eq(resp, nil)
  t.eq(err.kind, "auth")
  t.ok(err.status == nil or err.status == 200, "status: " .. tostring(err.status))
  t.eq(tostring(err):sub(1, #"hushcall: auth: "), "hushcall: auth: ")
  still_usable(strict, "an answer for another key")
end)

t.test("a slow server is kind timeout", function()
  local quick = h.peer_client(hushcall, { timeout = 1, max_retries = 0 })
  local resp, err = quick:create(h.chat("slow", { x_test = { delay_ms = 2500 } }))
  t.eq(resp, nil)
  t.eq(err.kind, "timeout")
  t.eq(err.status, nil)
  still_usable(quick, "a timeout")
end)

t.test("the gateway refuses a wrong api_key with 401 unauthorized", function()
  local gw = h.gateway_client(hushcall, { api_key = "not-the-key", max_retries = 0 })
  local resp, err = gw:create(h.chat("let me in"))
  t.eq(resp, nil)
  t.eq(err.kind, "unauthorized")
  t.eq(err.status, 401)
  t.eq(err.details.detail, "Invalid API key")
  t.eq(tostring(err), "hushcall: unauthorized: " .. err.message .. " (HTTP 401)")
  -- The same client, with the right key for one call.
  resp, err = gw:create(h.chat("right key", { api_key = h.gateway_key }))
  t.ok(resp, tostring(err))
  t.eq(content(resp), "echo: right key")
  -- And without any key at all.
  local nokey = assert(hushcall.new{ base_url = h.gateway_url, allow_http = true, key_bits = 2048,
                                     max_retries = 0 })
  resp, err = nokey:create(h.chat("no key"))
  t.eq(resp, nil)
  t.eq(err.kind, "unauthorized")
  t.eq(err.status, 401)
end)

t.test("rate_limited with retries left is retried to success", function()
  local resp, err = client:create(h.chat("patience",
    { x_test = { status = 429, retry_after = 1, times = 1 } }))
  t.ok(resp, tostring(err))
  t.eq(content(resp), "echo: patience")
  t.eq(h.posts_for(resp._metadata.payload_id), 2)
end)

t.test("http:// without allow_http is nil, err of kind argument", function()
  local c, err = hushcall.new{ base_url = h.peer_url, key_bits = 2048 }
  t.eq(c, nil)
  t.eq(type(err), "table")
  t.eq(err.kind, "argument")
  t.eq(err.status, nil)
  t.eq(type(err.message), "string")
  t.eq(tostring(err), "hushcall: argument: " .. err.message)
  c, err = hushcall.new{ base_url = h.peer_url, key_bits = 2048, allow_http = false }
  t.eq(c, nil)
  t.eq(err.kind, "argument")
end)

t.test("a key directory that will not load is nil, err", function()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute(h.plain .. "mkdir -m 700 " .. dir))
  local f = assert(io.open(dir .. "/private_key.pem", "w"))
  f:write("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
  f:close()
  os.execute(h.plain .. "chmod 600 " .. dir .. "/private_key.pem")
  local c, err = hushcall.new{ base_url = h.peer_url, allow_http = true, key_dir = dir }
  os.execute(h.plain .. "rm -rf " .. dir)
  t.eq(c, nil)
  t.eq(type(err), "table")
  t.eq(err.kind, "key")
  t.eq(err.status, nil)
  t.eq(tostring(err), "hushcall: key: " .. err.message)
end)

t.test("wrong option types raise bad argument naming the option", function()
  t.eq(t.raises(function() hushcall.new{ base_url = h.peer_url, allow_http = true, timeout = "10" } end,
                "bad argument"),
       "bad argument #1 to 'new' (timeout: number expected, got string)")
  local cases = {
    { "connect_timeout", "10" },
    { "max_retries", "2" },
    { "max_retries", 1.5 },
    { "allow_http", "yes" },
    { "api_key", 42 },
    { "security_tier", true },
    { "key_dir", {} },
    { "password", 7 },
    { "ca_file", false },
    { "tls_pin", 1 },
    { "server_key_fingerprint", 1 },
    { "max_request_bytes", "big" },
    { "key_bits", "many" },
    { "client_key", "not a key pair" },
    { "base_url", 80 },
  }
  for _, case in ipairs(cases) do
    local name, value = case[1], case[2]
    local opts = { base_url = h.peer_url, allow_http = true, key_bits = 2048 }
    opts[name] = value
    local msg = t.raises(function() hushcall.new(opts) end, "bad argument", name)
    t.contains(msg, name, "the error names the option")
    t.contains(msg, "'new'", "the error names the function")
  end
  t.raises(function() hushcall.new{ allow_http = true } end, "base_url")
  t.raises(function() hushcall.new("http://x") end, "bad argument #1 to 'new'")
  t.raises(function() hushcall.new() end, "bad argument #1 to 'new'")
end)

t.test("docs/lua.md's own example: hushcall.new{ timeout = \"10\" }", function()
  -- Verbatim from the spec, without base_url: the wrong type is what is named.
  t.eq(t.raises(function() hushcall.new{ timeout = "10" } end, "bad argument"),
       "bad argument #1 to 'new' (timeout: number expected, got string)")
end)

t.test("create with a non-table raises", function()
  t.raises(function() client:create("hello") end, "bad argument")
  t.raises(function() client:create() end, "bad argument")
  still_usable(client, "bad arguments")
end)

t.done()
