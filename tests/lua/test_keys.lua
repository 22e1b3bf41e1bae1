-- test_keys.lua — hushcall.generate_keys / load_keys, the client_key option,
-- and hushcall.memory_protection_info().
local t = require "tap"
local h = require "helpers"
local hushcall = require "hushcall"

local function tmpdir()
  local base = os.getenv("HUSH_TEST_TMP") or "/tmp"
  local p = assert(io.popen(h.plain .. "mktemp -d " .. base .. "/lua-keys-XXXXXX"))
  local dir = p:read("l")
  p:close()
  assert(dir and #dir > 0, "mktemp failed")
  return dir
end

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function mode(path)
  local p = assert(io.popen(h.plain .. "stat -c %a " .. path))
  local m = p:read("l")
  p:close()
  return m
end

local kp = assert(hushcall.generate_keys{ bits = 2048 })

t.test("generate_keys gives fingerprint, bits and public_pem", function()
  t.eq(type(kp.fingerprint), "string")
  t.ok(kp.fingerprint:match("^sha256:%x+$"), kp.fingerprint)
  t.eq(#kp.fingerprint, 71)
  t.eq(kp.bits, 2048)
  t.eq(math.type(kp.bits), "integer")
  local pem = kp:public_pem()
  t.ok(pem:match("^%-%-%-%-%-BEGIN PUBLIC KEY%-%-%-%-%-\n"), pem)
  t.not_contains(pem, "PRIVATE")
  local other = assert(hushcall.generate_keys{ bits = 2048 })
  t.ok(other.fingerprint ~= kp.fingerprint, "two keys differ")
end)

t.test("the private key never becomes a Lua value", function()
  for _, name in ipairs{ "private_pem", "private_key", "pem", "der", "secret" } do
    local ok, v = pcall(function() return kp[name] end)
    t.ok(not ok or v == nil, name .. " is exposed")
  end
  local s = tostring(kp)
  t.not_contains(s, "PRIVATE")
end)

t.test("save to key_dir and load_keys give the same key", function()
  local dir = tmpdir() .. "/keys"
  local saved = assert(hushcall.generate_keys{ bits = 2048, key_dir = dir })
  t.eq(saved.bits, 2048)
  local priv, pub = read(dir .. "/private_key.pem"), read(dir .. "/public_key.pem")
  t.ok(priv, "private_key.pem written")
  t.ok(pub, "public_key.pem written")
  t.contains(priv, "PRIVATE KEY")
  t.not_contains(priv, "ENCRYPTED")
  t.eq(pub:gsub("%s+$", ""), (saved:public_pem():gsub("%s+$", "")))
  t.eq(mode(dir), "700")
  t.eq(mode(dir .. "/private_key.pem"), "600")
  local loaded = assert(hushcall.load_keys{ key_dir = dir })
  t.eq(loaded.fingerprint, saved.fingerprint)
  t.eq(loaded.bits, 2048)
  local by_path = assert(hushcall.load_keys{ private_key = dir .. "/private_key.pem" })
  t.eq(by_path.fingerprint, saved.fingerprint)
end)

t.test("an existing key is kept unless overwrite", function()
  local dir = tmpdir() .. "/keys"
  local first = assert(hushcall.generate_keys{ bits = 2048, key_dir = dir })
  local again, err = hushcall.generate_keys{ bits = 2048, key_dir = dir }
  t.eq(again, nil)
  t.eq(type(err), "table")
  t.eq(err.kind, "exists")
  t.eq(assert(hushcall.load_keys{ key_dir = dir }).fingerprint, first.fingerprint)
  local second = assert(hushcall.generate_keys{ bits = 2048, key_dir = dir, overwrite = true })
  t.ok(second.fingerprint ~= first.fingerprint)
  t.eq(assert(hushcall.load_keys{ key_dir = dir }).fingerprint, second.fingerprint)
end)

t.test("a password protects the saved key", function()
  local dir = tmpdir() .. "/keys"
  local pw = "correct horse battery staple ✓"
  local saved = assert(hushcall.generate_keys{ bits = 2048, key_dir = dir, password = pw })
  t.contains(read(dir .. "/private_key.pem"), "ENCRYPTED PRIVATE KEY")
  local loaded, err = hushcall.load_keys{ key_dir = dir, password = "hunter2-not-it" }
  t.eq(loaded, nil)
  t.eq(err.kind, "password")
  t.eq(err.status, nil)
  t.not_contains(err.message, "hunter2", "the message quotes the password")
  t.eq(tostring(err), "hushcall: password: " .. err.message)
  loaded, err = hushcall.load_keys{ key_dir = dir }
  t.eq(loaded, nil)
  t.eq(err.kind, "password", "a missing password")
  loaded = assert(hushcall.load_keys{ key_dir = dir, password = pw })
  t.eq(loaded.fingerprint, saved.fingerprint)
  -- a client may load it too
  local c, cerr = hushcall.new{ base_url = h.peer_url, allow_http = true, key_dir = dir,
                                password = "wrong" }
  t.eq(c, nil)
  t.eq(cerr.kind, "password")
  c = assert(hushcall.new{ base_url = h.peer_url, allow_http = true, key_dir = dir, password = pw })
  t.eq(c:public_key_pem(), saved:public_pem())
  t.eq(assert(c:create(h.chat("with a saved key"))).choices[1].message.content,
       "echo: with a saved key")
end)

t.test("load_keys failures are nil, err", function()
  local dir = tmpdir()
  local k, err = hushcall.load_keys{ key_dir = dir .. "/nothing-here" }
  t.eq(k, nil)
  t.eq(type(err), "table")
  t.eq(type(err.kind), "string")
  k, err = hushcall.load_keys{ private_key = dir .. "/nope.pem" }
  t.eq(k, nil)
  t.eq(type(err.kind), "string")
  -- a key readable by others is refused
  local kd = dir .. "/open"
  assert(hushcall.generate_keys{ bits = 2048, key_dir = kd })
  os.execute(h.plain .. "chmod 644 " .. kd .. "/private_key.pem")
  k, err = hushcall.load_keys{ key_dir = kd }
  t.eq(k, nil)
  t.eq(err.kind, "permissions")
end)

t.test("wrong argument types raise", function()
  t.contains(t.raises(function() hushcall.generate_keys{ bits = "many" } end, "bad argument"), "bits")
  t.contains(t.raises(function() hushcall.load_keys{ key_dir = 5 } end, "bad argument"), "key_dir")
  t.contains(t.raises(function() hushcall.load_keys{ private_key = {} } end, "bad argument"),
             "private_key")
  t.contains(t.raises(function() hushcall.generate_keys{ bits = 2048, password = 1 } end,
                      "bad argument"), "password")
end)

t.test("client_key is the client's key", function()
  local c = assert(hushcall.new{ base_url = h.peer_url, allow_http = true, client_key = kp })
  t.eq(c:public_key_pem(), kp:public_pem())
  local resp, err = c:create(h.chat("with my own key"))
  t.ok(resp, tostring(err))
  t.eq(resp.choices[1].message.content, "echo: with my own key")
  -- The key pair stays usable by another client.
  local c2 = assert(hushcall.new{ base_url = h.peer_url, allow_http = true, client_key = kp })
  t.eq(c2:public_key_pem(), kp:public_pem())
  c = nil
  collectgarbage("collect")
  t.eq(assert(c2:create(h.chat("second"))).choices[1].message.content, "echo: second")
end)

t.test("memory_protection_info has Python's fields", function()
  local info = hushcall.memory_protection_info()
  t.eq(type(info), "table")
  local want = {
    platform = "string", mlock_available = "boolean", locked_bytes = "integer",
    lock_failures = "integer", dump_exclusion = "boolean", wipe_on_fork = "boolean",
    openssl_secure_heap = "boolean", mapped_bytes = "integer",
  }
  for k, ty in pairs(want) do
    local v = info[k]
    t.eq(math.type(v) or type(v), ty, k)
  end
  for k in pairs(info) do
    t.ok(want[k], "unexpected field " .. tostring(k))
  end
  t.eq(info.platform, "linux")
  t.ok(info.mapped_bytes >= info.locked_bytes, "mapped >= locked")
  t.ok(info.mapped_bytes > 0, "keys and clients live in mapped memory")
  -- Python's figures for the same fields, from the same library
  local p = assert(io.popen(h.plain .. "python3 -c \"import hushcall, json; "
    .. "print(' '.join(sorted(hushcall.get_memory_protection_info())))\" 2>/dev/null"))
  local names = p:read("l")
  p:close()
  if names then
    local mine = {}
    for k in pairs(info) do mine[#mine + 1] = k end
    table.sort(mine)
    t.eq(table.concat(mine, " "), names)
  end
end)

t.done()
