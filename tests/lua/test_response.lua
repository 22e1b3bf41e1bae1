-- test_response.lua — responses are userdata views over the decrypted
-- document in locked memory: indexing, #, pairs, ipairs, get, totable,
-- numbers, null, tostring, wipe, <close> and __gc.
local t = require "tap"
local h = require "helpers"
local hushcall = require "hushcall"

local client = h.peer_client(hushcall)

local TOP_KEYS = { "_metadata", "choices", "created", "id", "model", "object", "usage", "x_seen" }

local function ask(text, model)
  local req = h.chat(text)
  if model ~= nil then req.model = model end
  local resp, err = client:create(req)
  assert(resp, tostring(err))
  return resp
end

local function mapped()
  return hushcall.memory_protection_info().mapped_bytes
end

local function full_gc()
  for _ = 1, 3 do collectgarbage("collect") end
end

t.test("indexing objects by key and arrays by 1-based index", function()
  local resp = ask("index me")
  t.eq(type(resp), "userdata")
  t.eq(type(resp.choices), "userdata")
  t.eq(type(resp.choices[1]), "userdata")
  t.eq(resp.choices[1].message.content, "echo: index me")
  t.eq(resp.choices[1].index, 0)
  t.eq(resp.choices[0], nil, "index 0 is not an element")
  t.eq(resp.choices[2], nil, "past the end")
  t.eq(resp.no_such_member, nil)
  t.eq(resp.choices[1].message.no_such, nil)
  t.eq(resp.object, "chat.completion")
end)

t.test("# is the array length or the number of members", function()
  local resp = ask("count")
  t.eq(#resp.choices, 1)
  t.eq(#resp, #TOP_KEYS)
  t.eq(#resp.usage, 3)
  t.eq(#resp.x_seen.request_keys, 2)
  local m = ask("count", { a = hushcall.array{}, b = { 1, 2, 3, 4, 5 } }).model
  t.eq(#m.a, 0)
  t.eq(#m.b, 5)
  t.eq(#m, 2)
end)

t.test("pairs over an object, ipairs over an array", function()
  local resp = ask("iterate")
  local seen = {}
  local n = 0
  for k, v in pairs(resp) do
    t.eq(type(k), "string")
    seen[#seen + 1] = k
    n = n + 1
    if k == "choices" or k == "usage" or k == "x_seen" or k == "_metadata" then
      t.eq(type(v), "userdata", k .. " is a view")
    elseif k == "created" then
      t.eq(math.type(v), "integer")
    else
      t.eq(type(v), "string", k)
    end
  end
  table.sort(seen)
  t.eq(table.concat(seen, ","), table.concat(TOP_KEYS, ","))
  t.eq(n, #TOP_KEYS)

  local usage = {}
  for k, v in pairs(resp.usage) do usage[k] = v end
  t.eq(usage.prompt_tokens, 1)
  t.eq(usage.completion_tokens, 2)
  t.eq(usage.total_tokens, 3)
end)

t.test("ipairs yields views and leaves in order, including null", function()
  local m = ask("iterate", { 10, "two", hushcall.null, true, { x = 1 }, 2.5 }).model
  local items, last = {}, 0
  for i, v in ipairs(m) do
    t.eq(i, last + 1)
    last = i
    items[i] = v
  end
  t.eq(last, 6)
  t.eq(items[1], 10)
  t.eq(items[2], "two")
  t.eq(items[3], hushcall.null)
  t.eq(items[4], true)
  t.eq(type(items[5]), "userdata")
  t.eq(items[5].x, 1)
  t.eq(items[6], 2.5)
  local choices = 0
  for i, c in ipairs(ask("one").choices) do
    choices = i
    t.eq(c.message.content, "echo: one")
  end
  t.eq(choices, 1)
end)

t.test("get reaches members shadowed by method names", function()
  local resp = ask("methods", { wipe = "w", totable = "tt", get = "g", other = 1 })
  local m = resp.model
  t.eq(type(m.wipe), "function", "m.wipe is the method")
  t.eq(type(m.totable), "function")
  t.eq(type(m.get), "function")
  t.eq(m:get("wipe"), "w")
  t.eq(m:get("totable"), "tt")
  t.eq(m:get("get"), "g")
  t.eq(m:get("other"), 1)
  t.eq(m:get("missing"), nil)
  t.eq(resp:get("object"), "chat.completion")
  t.eq(resp:get("choices"):get(1):get("message"):get("content"), "echo: methods")
  -- The member named "wipe" was not called: the document is intact.
  t.eq(resp.choices[1].message.content, "echo: methods")
end)

t.test("totable is a deep copy into plain tables, usable after wipe", function()
  local resp = ask("copy me", { n = hushcall.null, f = 1.5, i = 3, list = { 1, { deep = "yes" } },
                               empty = hushcall.array{}, b = false })
  local tbl = resp:totable()
  t.eq(type(tbl), "table")
  t.eq(getmetatable(tbl), nil, "a plain table")
  t.eq(type(tbl.choices), "table")
  t.eq(type(tbl.choices[1].message), "table")
  t.eq(tbl.choices[1].message.content, "echo: copy me")
  t.eq(tbl.model.n, hushcall.null)
  t.eq(tbl.model.f, 1.5)
  t.eq(math.type(tbl.model.f), "float")
  t.eq(tbl.model.i, 3)
  t.eq(math.type(tbl.model.i), "integer")
  t.eq(tbl.model.list[2].deep, "yes")
  t.eq(#tbl.model.list, 2)
  t.eq(tbl.model.b, false)
  t.eq(type(tbl.model.empty), "table")
  t.eq(next(tbl.model.empty), nil)
  t.eq(tbl._metadata.is_encrypted, true)
  local n = 0
  for _ in pairs(tbl) do n = n + 1 end
  t.eq(n, #TOP_KEYS)
  -- A child view copies just itself.
  local usage = resp.usage:totable()
  t.eq(usage.total_tokens, tbl.usage.total_tokens)
  resp:wipe()
  t.eq(tbl.choices[1].message.content, "echo: copy me")
  t.eq(usage.prompt_tokens, 2)
  tbl.choices[1].message.content = "mutable"
  t.eq(tbl.choices[1].message.content, "mutable")
end)

t.test("numbers: integers when they fit, floats otherwise", function()
  local resp = ask("numbers", { 0, -1, math.maxinteger, math.mininteger, 0.25, 1e300, 2.0 ^ 64, 4.0 })
  local m = resp.model
  t.eq(math.type(resp.created), "integer")
  t.eq(math.type(resp.usage.total_tokens), "integer")
  t.eq(m[1], 0)
  t.eq(m[2], -1)
  t.eq(m[3], math.maxinteger)
  t.eq(m[4], math.mininteger)
  t.eq(m[5], 0.25)
  t.eq(m[6], 1e300)
  t.eq(m[7], 2.0 ^ 64)
  t.eq(math.type(m[7]), "float")
  t.eq(m[8], 4.0)
  t.eq(math.type(m[8]), "float", "4.0 is written and read as a float")
end)

t.test("null is hushcall.null; booleans are booleans", function()
  local resp = ask("null", hushcall.null)
  t.eq(resp.model, hushcall.null)
  t.eq(resp:get("model"), hushcall.null)
  t.eq(resp._metadata.is_encrypted, true)
  t.eq(type(resp._metadata.is_encrypted), "boolean")
end)

t.test("tostring is redacted", function()
  local secret = "zebra-" .. os.time()
  local resp = ask(secret, "model-" .. secret)
  local s = tostring(resp)
  t.eq(s, string.format("hushcall.response(object, %d members; contents redacted)", #TOP_KEYS))
  t.not_contains(s, secret)
  local c = tostring(resp.choices[1].message)
  t.not_contains(c, secret)
  t.not_contains(c, "echo")
  t.contains(c, "redacted")
  t.not_contains(tostring(resp.choices), secret)
end)

t.test("wipe makes every view raise, including ones taken earlier", function()
  local resp = ask("to be wiped", { k = "v" })
  local choices = resp.choices
  local message = resp.choices[1].message
  local model = resp.model
  local copied = message.content -- a Lua string: a copy, unaffected
  resp:wipe()
  local pat = "response was wiped"
  t.raises(function() return resp.choices end, pat)
  t.raises(function() return resp.id end, pat)
  t.raises(function() return choices[1] end, pat)
  t.raises(function() return message.content end, pat)
  t.raises(function() return model.k end, pat)
  t.raises(function() return #choices end, pat)
  t.raises(function() return #resp end, pat)
  t.raises(function() for _ in pairs(resp) do end end, pat)
  t.raises(function() for _ in ipairs(choices) do end end, pat)
  t.raises(function() return resp:get("id") end, pat)
  t.raises(function() return resp:totable() end, pat)
  t.raises(function() return model:totable() end, pat)
  t.eq(copied, "echo: to be wiped")
  -- tostring of a wiped response does not raise a secret either way.
  local ok, s = pcall(tostring, resp)
  t.not_contains(ok and s or tostring(s), "to be wiped")
end)

t.test("wipe through a child view wipes the whole document", function()
  local resp = ask("child wipe")
  local usage = resp.usage
  usage:wipe()
  t.raises(function() return resp.choices end, "response was wiped")
  t.raises(function() return usage.total_tokens end, "response was wiped")
end)

t.test("<close> wipes at the end of the scope", function()
  local kept, text
  do
    local r <close> = client:create(h.chat("closing"))
    kept = r.choices[1].message
    text = kept.content
  end
  t.eq(text, "echo: closing")
  t.raises(function() return kept.content end, "response was wiped")
  -- nil from a failed call is fine under <close>.
  local strict = h.peer_client(hushcall, { max_retries = 0 })
  do
    local r <close>, err = strict:create(h.chat("x", { x_test = { status = 400 } }))
    t.eq(r, nil)
    t.eq(err.kind, "bad_request")
  end
  -- and an error raised inside the scope still wipes it.
  local ok = pcall(function()
    local r <close> = client:create(h.chat("raising"))
    kept = r.choices
    error("boom")
  end)
  t.eq(ok, false)
  t.raises(function() return kept[1] end, "response was wiped")
end)

t.test("__gc unmaps the document once no view of it is left", function()
  local big = string.rep("g", 400000)
  -- warm up: the first big answer may grow pools that stay.
  ask("warm", big)
  full_gc()
  local base = mapped()
  t.eq(math.type(base), "integer")
  local resp = ask("big", big)
  local held = mapped()
  t.ok(held >= base + 400000, string.format("a 400 kB answer maps memory: %d -> %d", base, held))
  local child = resp.choices
  resp = nil
  full_gc()
  t.ok(mapped() >= base + 400000,
       string.format("a child view keeps the document: %d, base %d", mapped(), base))
  t.eq(child[1].message.content, "echo: big")
  child = nil
  full_gc()
  local after = mapped()
  t.ok(after <= held - 400000,
       string.format("the document was unmapped: base %d, held %d, after %d", base, held, after))
end)

t.test("a wiped response is unmapped at once or by __gc", function()
  local big = string.rep("w", 400000)
  full_gc()
  local base = mapped()
  local resp = ask("wipe big", big)
  local held = mapped()
  resp:wipe()
  resp = nil
  full_gc()
  t.ok(mapped() <= held - 400000, string.format("base %d, held %d, now %d", base, held, mapped()))
end)

t.done()
