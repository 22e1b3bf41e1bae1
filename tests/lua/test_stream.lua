-- test_stream.lua — streamed answers (client:stream, the fd form with
-- client:submit{stream = true} and call:next_chunk) and the generic call
-- (client:request, a path for create/stream), against the real gateway
-- (echo backend, --echo-delay-ms) and the independent EHBP peer
-- (tests/interop/ehbp_server.py) in both suites.
local t = require "tap"
local h = require "helpers"
local hushcall = require "hushcall"

local function need(name)
  local v = os.getenv(name)
  assert(v and v ~= "", name .. " is not set: run through tests/lua/run.py")
  return v
end

local ehbp_url = need("HUSH_EHBP_PEER_URL")
local plain_ehbp_url = need("HUSH_EHBP_PLAIN_PEER_URL")

-- One client key for every client here, so none is left generating one in
-- the background when the state closes at exit.
local client_key = assert(hushcall.generate_keys{ bits = 2048 })

local function v2_client(base_url, extra)
  local opts = { base_url = base_url, allow_http = true, max_retries = 0,
                 client_key = client_key, protocol = "v2" }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return assert(hushcall.new(opts))
end

local function gateway(extra)
  local opts = { api_key = h.gateway_key }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return v2_client(h.gateway_url, opts)
end

-- A message of `n` distinct words: the echo streams it word by word.
local function words(prefix, n)
  local out = {}
  for i = 1, n do out[i] = prefix .. i end
  return table.concat(out, " ")
end

-- Read a streamed chat or completions answer with the generic for: the text
-- its deltas make, the number of chunks and the last finish_reason.
local function collect(stream_fn)
  local parts, count, finish = {}, 0, nil
  for chunk in stream_fn() do
    count = count + 1
    local choice = chunk.choices[1]
    if choice then
      local piece = choice.delta and choice.delta.content or choice.text
      if type(piece) == "string" then parts[#parts + 1] = piece end
      if choice.finish_reason ~= hushcall.null then finish = choice.finish_reason end
    end
  end
  return table.concat(parts), count, finish
end

-- The error a stream raises while being iterated (its chunks counted).
local function stream_error(stream)
  local count = 0
  local ok, err = pcall(function()
    for _ in stream do count = count + 1 end
  end)
  t.eq(ok, false, "the stream raised")
  return err, count
end

-- POST a JSON control to an EHBP peer; its answer's text.
local function control(url, json)
  local cmd = h.plain .. "curl -sS --max-time 10 -w '\n%{http_code}' -X POST "
      .. "-H 'Content-Type: application/json' -d '" .. json .. "' " .. url .. "/__control"
  local p = assert(io.popen(cmd))
  local text = p:read("a")
  p:close()
  local body, code = text:match("^(.*)\n(%d+)$")
  t.eq(code, "200", "POST /__control " .. json)
  return body
end

-- The peer's count of streams given up because the client went away.
local function peer_client_gone(url)
  local text = control(url, "{}")
  return assert(math.tointeger(tonumber(text:match('"client_gone":%s*(%d+)'))),
                "no client_gone in the control answer: " .. text)
end

-- Run `fn` with the peer's streams set as `settings` (JSON), then restored.
local function with_stream_settings(url, settings, fn)
  control(url, '{"stream": ' .. settings .. '}')
  local ok, err = pcall(fn)
  control(url, '{"stream": {}}')
  if not ok then error(err, 0) end
end

-- The gateway's in-flight count (its /healthz, with the API key).
local function gateway_in_flight()
  local cmd = h.plain .. "curl -sS --max-time 10 -H 'Authorization: Bearer " .. h.gateway_key
      .. "' " .. h.gateway_url .. "/healthz"
  local p = assert(io.popen(cmd))
  local text = p:read("a")
  p:close()
  local n = text:match('"in_flight":%s*(%d+)')
  return assert(math.tointeger(tonumber(n)), "no in_flight in /healthz: " .. text)
end

local function sleep(seconds)
  os.execute(h.plain .. "sleep " .. seconds)
end

-- ---- the generic-for form -------------------------------------------------

local function streams_like_create(name, client)
  t.test(name .. ": the chunks make the answer create() gives", function()
    local text = words("w", 12)
    local whole = assert(client:create(h.chat(text)))
    local got, count, finish = collect(function()
      return assert(client:stream(h.chat(text)))
    end)
    t.eq(got, whole.choices[1].message.content)
    t.ok(count > 1, "more than one chunk, got " .. count)
    t.eq(finish, "stop")
  end)
end

streams_like_create("gateway (X-Wing)", gateway())
streams_like_create("EHBP peer (X-Wing)", v2_client(ehbp_url))
streams_like_create("plain EHBP peer (X25519)", v2_client(plain_ehbp_url))

t.test("a chunk is a response view: fields, _metadata, redacted tostring, wipe", function()
  local secret = "lettuce-" .. os.time()
  local seen = 0
  for chunk in assert(gateway():stream(h.chat(secret .. " and more"))) do
    seen = seen + 1
    t.eq(chunk.object, "chat.completion.chunk")
    local shown = tostring(chunk)
    t.contains(shown, "contents redacted")
    t.not_contains(shown, "lettuce")
    t.eq(type(chunk:totable()), "table")
    chunk:wipe()
    t.raises(function() return chunk.object end, "response was wiped")
  end
  t.ok(seen > 1, "chunks seen: " .. seen)
end)

t.test("stream() leaves the caller's table alone and refuses stream = false", function()
  local req = h.chat("keep me")
  for _ in assert(gateway():stream(req)) do end
  t.eq(req.stream, nil)
  t.raises(function() gateway():stream(h.chat("x", { stream = false })) end, "stream: true or nil")
  t.raises(function() gateway():create(h.chat("x", { stream = true })) end, "client:stream")
end)

t.test("breaking out early cancels the call: the gateway lets the request go", function()
  local client = gateway()
  -- Held past the loop, so that only the loop's closing (not the collector)
  -- can cancel the call.
  local stream, state, control_value, closing = assert(client:stream(h.chat(words("long", 2000))))
  local got = 0
  for _ in stream, state, control_value, closing do
    got = got + 1
    if got == 2 then
      t.eq(gateway_in_flight(), 1, "the stream is in flight while read")
      break
    end
  end
  -- 2000 words at the gateway's echo delay take far longer than this wait.
  local tries = 0
  while gateway_in_flight() ~= 0 do
    tries = tries + 1
    assert(tries < 100, "the gateway still serves the stream 10 s after the loop was left")
    sleep(0.1)
  end
  t.ok(client:create(h.chat("after the break")), "the client stays usable")
  t.eq(tostring(stream), "hushcall.stream(released)", "the loop released the stream")
end)

t.test("close() ends a stream; it is then an error to read on", function()
  local client = gateway()
  local stream = assert(client:stream(h.chat(words("c", 50))))
  t.ok(stream(), "a first chunk")
  stream:close()
  stream:close() -- twice is harmless
  local resp, err = stream:next_chunk()
  t.eq(resp, nil)
  t.eq(err.kind, "cancelled")
  t.raises(function() return stream() end, "closed")
end)

t.test("a to-be-closed stream is closed when its scope ends", function()
  local client = gateway()
  local held
  do
    local stream <close> = assert(client:stream(h.chat(words("tbc", 50))))
    held = stream
    t.ok(stream:next_chunk(30), "a first chunk")
  end
  local resp, err = held:next_chunk()
  t.eq(resp, nil)
  t.eq(err.kind, "cancelled")
end)

-- ---- failures -------------------------------------------------------------

t.test("a truncated stream raises kind truncated after every good chunk", function()
  local client = v2_client(ehbp_url)
  with_stream_settings(ehbp_url, '{"truncate": 3}', function()
    local err, count = stream_error(assert(client:stream(h.chat(words("t", 8)))))
    t.eq(err.kind, "truncated", tostring(err))
    t.eq(count, 3, "each of the 3 events sent came out before the error")
    t.contains(tostring(err), "hushcall: truncated")
  end)
  t.ok(client:create(h.chat("after truncation")), "the client stays usable")
end)

t.test("a tampered frame raises kind auth, nothing from it on is released", function()
  local client = v2_client(ehbp_url)
  with_stream_settings(ehbp_url, '{"tamper": 2}', function()
    local err, count = stream_error(assert(client:stream(h.chat("tampered secret words here"))))
    t.eq(err.kind, "auth", tostring(err))
    t.ok(count <= 2, "no chunk from frame 2 on: got " .. count)
    t.not_contains(err.message, "secret")
  end)
  t.ok(client:create(h.chat("after tampering")), "the client stays usable")
end)

t.test("a failure is returned again by every later next_chunk", function()
  local client = v2_client(ehbp_url)
  with_stream_settings(ehbp_url, '{"truncate": 2}', function()
    local stream = assert(client:submit(h.chat(words("again", 6), { stream = true })))
    local chunk, err = stream:next_chunk(30)
    while chunk do chunk, err = stream:next_chunk(30) end
    t.eq(chunk, nil)
    t.eq(err.kind, "truncated")
    chunk, err = stream:next_chunk()
    t.eq(chunk, nil)
    t.eq(err.kind, "truncated")
    stream:close()
  end)
end)

-- Framings and event syntax an EHBP peer may choose: the client parses the
-- events from the opened plaintext whatever the frames.
for _, settings in ipairs{
  '{"framing": "batch", "batch": 4}',
  '{"framing": "split", "split": 5}',
  '{"framing": "split", "split": 1, "eol": "\\r\\n", "comments": true}',
  '{"eol": "\\r"}',
} do
  t.test("EHBP peer framing " .. settings .. ": the same answer", function()
    local client = v2_client(ehbp_url)
    local text = words("f", 9)
    local whole = assert(client:create(h.chat(text))).choices[1].message.content
    with_stream_settings(ehbp_url, settings, function()
      local got, count, finish = collect(function() return assert(client:stream(h.chat(text))) end)
      t.eq(got, whole)
      t.ok(count > 1, "chunks: " .. count)
      t.eq(finish, "stop")
    end)
  end)
end

t.test("EHBP peer: breaking out early closes the connection the peer streams on", function()
  local client = v2_client(ehbp_url)
  local gone = peer_client_gone(ehbp_url)
  with_stream_settings(ehbp_url, '{"delay_ms": 50}', function()
    local stream, state, control_value, closing = assert(client:stream(h.chat(words("brk", 400))))
    local got = 0
    for _ in stream, state, control_value, closing do
      got = got + 1
      if got == 2 then break end
    end
    local tries = 0
    while peer_client_gone(ehbp_url) == gone do
      tries = tries + 1
      assert(tries < 100, "the peer did not see the client go within 10 s")
      sleep(0.1)
    end
    t.eq(tostring(stream), "hushcall.stream(released)", "the loop released the stream")
  end)
  t.ok(client:create(h.chat("after the break")), "the client stays usable")
end)

t.test("streams and other endpoints over v1 are refused, nothing sent", function()
  local v1 = h.gateway_client(hushcall, { client_key = client_key })
  local ok, err = pcall(function()
    for _ in assert(v1:stream(h.chat("v1 stream"))) do end
  end)
  t.eq(ok, false)
  t.eq(err.kind, "unsupported", tostring(err))
  local resp
  resp, err = v1:request{ path = "/v1/embeddings", body = { model = "m", input = "x" } }
  t.eq(resp, nil)
  t.eq(err.kind, "unsupported")
end)

-- ---- the fd form ------------------------------------------------------------

t.test("fd form: two streams interleaved, each chunk announced on the fd", function()
  local client = gateway()
  local texts = { words("left", 10), words("right", 10) }
  local index, parts, order, ended = {}, { {}, {} }, {}, 0
  for i, text in ipairs(texts) do
    local s = assert(client:submit(h.chat(text, { stream = true })))
    t.eq(s.stream, true)
    t.contains(tostring(s), "hushcall.stream(")
    index[s] = i
  end
  local fd = hushcall.fd()
  local rounds = 0
  while ended < 2 do
    rounds = rounds + 1
    assert(rounds < 5000, "the streams did not end")
    if (h.eventfd_count(fd) or 1) == 0 then sleep(0.02) end
    for _, s in ipairs(hushcall.drain()) do
      local i = index[s]
      t.ok(i, "drained a stream this test submitted")
      while true do
        local chunk, err = s:next_chunk()
        if chunk == false then break end
        if chunk == nil then
          t.eq(err, nil, "stream " .. i .. " failed")
          ended = ended + 1
          index[s] = nil
          break
        end
        order[#order + 1] = i
        local piece = chunk.choices[1] and chunk.choices[1].delta.content
        if type(piece) == "string" then table.insert(parts[i], piece) end
      end
    end
  end
  local first, last = {}, {}
  for n, i in ipairs(order) do
    first[i] = first[i] or n
    last[i] = n
  end
  t.ok(first[2] < last[1] and first[1] < last[2], "the two streams' chunks interleave")
  for i, text in ipairs(texts) do
    t.eq(table.concat(parts[i]), assert(client:create(h.chat(text))).choices[1].message.content)
  end
  t.eq(#hushcall.drain(), 0, "nothing left to drain")
  t.eq(h.eventfd_count(fd) or 0, 0, "the fd is quiet")
end)

t.test("fd form: a stream whose end next_chunk already gave is not drained again", function()
  local client = gateway()
  local s = assert(client:submit(h.chat(words("ends", 6), { stream = true })))
  local fd = hushcall.fd()
  -- Drain the first announcement (its chunks) while the stream still runs ...
  local listed
  for _ = 1, 500 do
    for _, d in ipairs(hushcall.drain()) do listed = listed or d == s end
    if listed then break end
    sleep(0.01)
  end
  t.ok(listed, "the stream's chunks were announced")
  -- ... then take its end before draining the end's own announcement.
  t.eq(s:wait(30), true, "the stream ended")
  local chunk, err
  repeat chunk, err = s:next_chunk() until chunk == nil or chunk == false
  t.eq(chunk, nil, "the end is taken")
  t.eq(err, nil)
  local again = false
  for _, d in ipairs(hushcall.drain()) do again = again or d == s end
  t.eq(again, false, "an end already taken is not announced as news")
  t.eq(s:next_chunk(), nil, "and stays ended")
  t.eq(h.eventfd_count(fd) or 0, 0, "the fd is quiet")
end)

t.test("fd form: a stream the caller dropped is held until it ends", function()
  local client = gateway()
  local weak = setmetatable({}, { __mode = "k" })
  weak[assert(client:submit(h.chat("held words", { stream = true })))] = true
  local parts, ended = {}, false
  for _ = 1, 5000 do
    collectgarbage()
    for _, s in ipairs(hushcall.drain()) do
      t.ok(weak[s], "the submitted stream came back")
      while true do
        local chunk, err = s:next_chunk()
        if chunk == nil then t.eq(err, nil, "not cancelled by the collector"); ended = true end
        if not chunk then break end
        local piece = chunk.choices[1] and chunk.choices[1].delta.content
        if type(piece) == "string" then parts[#parts + 1] = piece end
      end
    end
    if ended then break end
    sleep(0.02)
  end
  t.ok(ended, "the stream ended")
  t.eq(table.concat(parts), assert(client:create(h.chat("held words"))).choices[1].message.content)
  collectgarbage()
  collectgarbage()
  t.eq(next(weak), nil, "collected once ended and dropped")
end)

-- ---- every endpoint ----------------------------------------------------------

local function endpoints(name, client)
  t.test(name .. ": embeddings, deterministic", function()
    local req = { path = "/v1/embeddings", body = { model = "m", input = "embed me" } }
    local one = assert(client:request(req))
    local two = assert(client:request(req))
    local v1, v2 = one.data[1].embedding, two.data[1].embedding
    t.ok(#v1 > 0, "a vector")
    for i = 1, #v1 do
      t.eq(math.type(v1[i]) ~= nil, true)
      t.eq(v1[i], v2[i])
    end
    t.eq(one.object, "list")
    t.eq(one._metadata.is_encrypted, true)
  end)
  t.test(name .. ": completions, whole and streamed, via create{path}", function()
    local whole = assert(client:create{ path = "/v1/completions", model = "m",
                                        prompt = "complete this" })
    t.eq(whole.object, "text_completion")
    local got, count = collect(function()
      return assert(client:stream{ path = "/v1/completions", model = "m",
                                   prompt = "complete this" })
    end)
    t.eq(got, whole.choices[1].text)
    t.ok(count >= 1, "chunks")
  end)
  t.test(name .. ": GET /v1/models is plaintext, said so in _metadata", function()
    local models = assert(client:request{ method = "GET", path = "/v1/models" })
    t.eq(models.object, "list")
    t.eq(models._metadata.is_encrypted, false)
  end)
end

endpoints("gateway", gateway())
endpoints("EHBP peer", v2_client(ehbp_url))

t.test("request: wrong types raise naming the field, bad values are the core's err", function()
  local c = gateway()
  t.raises(function() c:request{ body = {} } end, "path: string expected")
  t.raises(function() c:request{ path = "/v1/x", nope = 1 } end, "unknown field 'nope'")
  t.raises(function() c:request{ path = 7, body = {} } end, "path: string expected, got number")
  for _, bad in ipairs{ { path = "v1/x" }, { path = "/v1/a b" }, { path = "/v1/../admin" },
                        { path = "/v1/x", method = "PUT" } } do
    bad.body = { model = "m" }
    local resp, err = c:request(bad)
    t.eq(resp, nil)
    t.eq(err.kind, "argument", bad.path .. " " .. tostring(bad.method))
  end
  t.raises(function() c:request{ method = "GET", path = "/v1/models", body = {} } end,
           "GET request has none")
end)

t.test("an unknown path is the server's 404, the client stays usable", function()
  local c = gateway()
  local resp, err = c:request{ path = "/v1/nothing/here", body = { model = "m" } }
  t.eq(resp, nil)
  t.eq(err.status, 404)
  t.ok(c:create(h.chat("after 404")))
end)

t.done()
