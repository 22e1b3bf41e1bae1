-- test_serialize.lua — Lua tables to JSON, checked through the NOMYO peer,
-- which echoes the request's "model" member back whatever it is and lists the
-- request's top-level keys in x_seen.request_keys.
local t = require "tap"
local h = require "helpers"
local hushcall = require "hushcall"

local client = h.peer_client(hushcall)

-- The request's model, as the peer received it, as a view.
local function echoed(model, extra)
  local req = h.chat("serialize", extra)
  req.model = model
  local resp, err = client:create(req)
  assert(resp, tostring(err))
  return resp.model, resp
end

local function keys_seen(resp)
  local out = {}
  for i = 1, #resp.x_seen.request_keys do out[#out + 1] = resp.x_seen.request_keys[i] end
  return table.concat(out, ",")
end

local function kind_of(view)
  -- tostring of a view: "hushcall.response(<object|array>, N members; contents redacted)"
  local s = tostring(view)
  return s:match("^hushcall%.response%((%a+)"), s
end

t.test("arrays and objects", function()
  local m = echoed{ list = { 10, 20, 30 }, obj = { a = 1, b = 2 }, nested = { { 1 }, { x = { 2, 3 } } } }
  t.eq(#m.list, 3)
  t.eq(m.list[1], 10)
  t.eq(m.list[3], 30)
  t.eq(m.list[4], nil)
  t.eq(kind_of(m.list), "array")
  t.eq(kind_of(m.obj), "object")
  t.eq(m.obj.a, 1)
  t.eq(m.obj.b, 2)
  t.eq(m.nested[1][1], 1)
  t.eq(m.nested[2].x[2], 3)
end)

t.test("an empty table is an object; hushcall.array{} and hushcall.object{} mark it", function()
  local m = echoed{ plain = {}, arr = hushcall.array{}, obj = hushcall.object{},
                    arr2 = hushcall.array{ 1, 2 }, obj2 = hushcall.object{ k = "v" } }
  t.eq(kind_of(m.plain), "object")
  t.eq(#m.plain, 0)
  t.eq(kind_of(m.arr), "array")
  t.eq(#m.arr, 0)
  t.eq(kind_of(m.obj), "object")
  t.eq(kind_of(m.arr2), "array")
  t.eq(m.arr2[2], 2)
  t.eq(kind_of(m.obj2), "object")
  t.eq(m.obj2.k, "v")
  -- Top level: the whole request forced to be an object still works.
  local resp = assert(client:create(hushcall.object(h.chat("forced"))))
  t.eq(resp.choices[1].message.content, "echo: forced")
  -- An empty array as a top-level member is still a member.
  local _, r2 = echoed("m", { tools = hushcall.array{} })
  t.eq(keys_seen(r2), "messages,model,tools")
end)

t.test("hushcall.null is JSON null and keeps its key; nil drops it", function()
  t.ok(hushcall.null ~= nil)
  local m, resp = echoed({ n = hushcall.null, list = { 1, hushcall.null, 3 } },
                         { stop = hushcall.null, user = nil })
  t.eq(m.n, hushcall.null)
  t.eq(#m.list, 3)
  t.eq(m.list[2], hushcall.null)
  t.eq(keys_seen(resp), "messages,model,stop")
end)

t.test("integers stay integers, floats stay floats (Python repr)", function()
  local values = {
    i = 42, neg = -7, zero = 0, maxi = math.maxinteger, mini = math.mininteger,
    half = 0.5, three = 3.0, tenth = 0.1, third = 1 / 3, e16 = 1e16, tiny = 5e-324,
    big = 1.7976931348623157e308, two63 = 2.0 ^ 63, negz = -0.0, small = 1e-7,
  }
  local m, resp = echoed(values, { temperature = 0.5, max_tokens = 16 })
  for k, v in pairs(values) do
    t.eq(m[k], v, k)
    t.eq(math.type(m[k]), math.type(v), k .. " type")
  end
  t.eq(1 / m.negz, -math.huge, "-0.0 keeps its sign")
  t.eq(keys_seen(resp), "max_tokens,messages,model,temperature")
  -- temperature = 0.5 survives: send it where the echo shows it.
  local temp = echoed(0.5)
  t.eq(temp, 0.5)
  t.eq(math.type(temp), "float")
end)

t.test("booleans", function()
  local m = echoed{ yes = true, no = false, list = { true, false } }
  t.eq(m.yes, true)
  t.eq(m.no, false)
  t.eq(m.list[2], false)
end)

t.test("strings: unicode, escapes, NUL bytes", function()
  local texts = {
    "héllo wörld ✓ 😀 \u{10FFFF}",
    "quote \" backslash \\ slash / newline \n tab \t cr \r",
    "nul \0 inside and \1 \31 \127",
    "\u{2028}\u{2029}",
    "",
  }
  for _, s in ipairs(texts) do
    local resp = assert(client:create(h.chat(s)))
    t.eq(resp.choices[1].message.content, "echo: " .. s)
  end
  local m = echoed{ ["ключ"] = "значение", ["emoji 😀"] = { "🙂" } }
  t.eq(m["ключ"], "значение")
  t.eq(m["emoji 😀"][1], "🙂")
  -- content as a list of text parts
  local resp = assert(client:create{ model = "m", messages = { { role = "user", content = {
    { type = "text", text = "a" }, { type = "image_url", image_url = { url = "x" } },
    { type = "text", text = "b" } } } } })
  t.eq(resp.choices[1].message.content, "echo: ab")
end)

-- Each refused input: the error names the path, never the value.
local CANARY = "canary-" .. tostring(os.time()) .. "-value"

local function refused(label, req, path, extra_pattern)
  t.test("refused: " .. label, function()
    local before = h.completions()
    local msg = t.raises(function() client:create(req) end, nil)
    t.contains(msg, path, "the error names the path")
    t.not_contains(msg, CANARY, "the error quotes the value")
    t.not_contains(msg, "0x", "the error shows an address")
    if extra_pattern then
      t.ok(msg:find(extra_pattern), msg .. " does not match " .. extra_pattern)
    end
    -- submit refuses it the same way.
    local msg2 = t.raises(function() client:submit(req) end, nil)
    t.contains(msg2, path, "submit's error names the path")
    t.eq(h.completions(), before, "nothing was sent")
    local resp = assert(client:create(h.chat("after " .. label)))
    t.eq(resp.choices[1].message.content, "echo: after " .. label)
  end)
end

local cyclic = { role = "user", content = "x" }
cyclic.self = cyclic
refused("a cycle", { model = "m", messages = { cyclic } }, "messages[1].self")

refused("a function",
        { model = "m", messages = { { role = "user", content = "a" },
                                    { role = "user", content = function() return CANARY end } } },
        "messages[2].content: cannot encode a function")

refused("a coroutine", { model = "m", messages = {}, x = { co = coroutine.create(function() end) } },
        "x.co", "thread")

refused("a userdata", { model = "m", messages = {}, x = { io.stdout } }, "x[1]", "userdata")

refused("NaN", { model = "m", messages = {}, temperature = 0 / 0 }, "temperature")

refused("math.huge", { model = "m", messages = {}, x = { a = math.huge } }, "x.a")

refused("-math.huge", { model = "m", messages = {}, x = { 1, -math.huge } }, "x[2]")

refused("a float key", { model = "m", messages = {}, x = { [1.5] = CANARY } }, "x")

refused("a boolean key", { model = "m", messages = {}, x = { [true] = CANARY } }, "x")

refused("an integer key among string keys",
        { model = "m", messages = {}, x = { a = 1, [5] = CANARY } }, "x")

refused("sequence keys among string keys",
        { model = "m", messages = {}, x = { CANARY, b = 2 } }, "x")

refused("integer keys with a gap", { model = "m", messages = {}, x = { [1] = 1, [3] = CANARY } }, "x")

refused("invalid UTF-8 in a string",
        { model = "m", messages = { { role = "user", content = CANARY .. "caf\xff" } } },
        "messages[1].content", "UTF%-8")

-- The path of a member names its key, so the key here carries no canary.
refused("invalid UTF-8 in a key", { model = "m", messages = {}, x = { ["\xc3("] = CANARY } },
        "x", "UTF%-8")

do
  local deep = {}
  local node = deep
  for _ = 1, 100 do
    local child = {}
    node[1] = child
    node = child
  end
  node[1] = CANARY
  refused("nesting deeper than 64", { model = "m", messages = {}, x = deep }, "x[1][1][1]", "64")
end

local function nested(levels)
  local root = {}
  local node = root
  for _ = 2, levels do
    local child = {}
    node[1] = child
    node = child
  end
  return root
end

t.test("64 levels are fine, 65 are refused (the request object is level 1)", function()
  local resp, err = client:create(h.chat("deep", { x = nested(63) }))
  t.ok(resp, tostring(err))
  t.eq(resp.choices[1].message.content, "echo: deep")
  t.raises(function() client:create(h.chat("deeper", { x = nested(64) })) end, "64")
end)

t.test("moderate nesting is fine", function()
  local deep = {}
  local node = deep
  for _ = 1, 30 do
    local child = {}
    node.c = child
    node = child
  end
  node.leaf = "bottom"
  local m = echoed(deep)
  local v = m
  for _ = 1, 30 do v = v.c end
  t.eq(v.leaf, "bottom")
end)

t.test("a request over max_request_bytes is nil, err of kind limit, and nothing is sent", function()
  local small = h.peer_client(hushcall, { max_request_bytes = 4096 })
  local before = h.completions()
  local resp, err = small:create(h.chat(string.rep("y", 5000)))
  t.eq(resp, nil)
  t.eq(type(err), "table")
  t.eq(err.kind, "limit")
  t.eq(err.status, nil)
  t.eq(tostring(err), "hushcall: limit: " .. err.message)
  local call, err2 = small:submit(h.chat(string.rep("z", 5000)))
  t.eq(call, nil)
  t.eq(err2.kind, "limit")
  t.eq(h.completions(), before, "nothing was sent")
  resp = assert(small:create(h.chat("small enough")))
  t.eq(resp.choices[1].message.content, "echo: small enough")
  t.eq(h.completions(), before + 1)
end)

t.done()
