-- test_package.lua — docs/lua.md "Building and installing": the module as
-- `make build` leaves it, the two parts, and the rockspec, built with
-- luarocks into a scratch tree and used from there.
local t = require "tap"
local h = require "helpers"
local hushcall = require "hushcall"

local ROOT = assert(os.getenv("HUSH_REPO_ROOT"), "HUSH_REPO_ROOT is not set: use run.py")
local BUILD = assert(os.getenv("HUSH_LUA_BUILD_DIR"), "HUSH_LUA_BUILD_DIR is not set: use run.py")

-- Runs cmd with sh; without the sanitizer runtime run.py may preload into
-- lua5.4, unless keep_preload.
local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function sh(cmd, keep_preload)
  if not keep_preload then cmd = h.plain .. "sh -c " .. q(cmd) end
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok, out, code
end

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

t.test("the documented one-liner prints the version", function()
  t.ok(io.open(ROOT .. "/lua/hushcall.lua"), "run from the repository root")
  local ok, out = sh(string.format(
    "cd %s && env LUA_CPATH=%s LUA_PATH='lua/?.lua;;' lua5.4 -e 'print(require \"hushcall\".version)'",
    q(ROOT), q(BUILD .. "/lua/?.so;;")), true)
  t.ok(ok, out)
  t.eq(out, hushcall.version .. "\n")
  t.ok(hushcall.version:match("^%d+%.%d+%.%d+"), "a version number: " .. hushcall.version)
end)

t.test("two parts: hushcall.core (C) and hushcall (Lua)", function()
  local core = require "hushcall.core"
  t.eq(type(core), "table")
  local cpath = package.searchpath("hushcall.core", package.cpath)
  t.ok(cpath and cpath:match("/lua/hushcall/core%.so$"), tostring(cpath))
  local lpath = package.searchpath("hushcall", package.path)
  t.ok(lpath and lpath:match("/lua/hushcall%.lua$"), tostring(lpath))
  for _, name in ipairs{ "new", "generate_keys", "load_keys", "memory_protection_info", "fd",
                         "drain", "array", "object" } do
    t.eq(type(hushcall[name]), "function", name)
  end
  t.ok(hushcall.null ~= nil)
  t.eq(type(hushcall.version), "string")
end)

-- The rockspec as a Lua table.
local function rockspec()
  local env = {}
  local chunk = assert(loadfile(ROOT .. "/hushcall-scm-1.rockspec", "t", env))
  chunk()
  return env
end

t.test("the rockspec builds through CMake, which alone lists the sources", function()
  local spec = rockspec()
  t.eq(spec.package, "hushcall")
  t.eq(spec.version, "scm-1")
  t.ok(spec.dependencies and spec.dependencies[1]:match("^lua >= 5%.4"),
       "depends on lua >= 5.4")
  t.eq(spec.build.type, "cmake")
  t.eq(spec.build.modules, nil, "the rockspec lists modules of its own")
  local vars = spec.build.variables
  t.eq(vars.HUSH_LUA_CMOD_DIR, "$(LIBDIR)")
  t.eq(vars.HUSH_LUA_LMOD_DIR, "$(LUADIR)")
  t.eq(vars.HUSH_BUILD_TESTS, "OFF")
  -- CMake's core sources, named by no other build file.
  local cmake = read(ROOT .. "/CMakeLists.txt")
  local block = assert(cmake:match("set%(HUSH_CORE_SOURCES(.-)%)"), "HUSH_CORE_SOURCES in CMakeLists.txt")
  t.ok(block:match("core/src/[%w_/]+%.c"), "HUSH_CORE_SOURCES lists core/src/*.c")
  for _, file in ipairs{ "setup.py", "hushcall-scm-1.rockspec", "Makefile" } do
    t.eq(read(ROOT .. "/" .. file):match("core/src/[%w_/*]*%.c"), nil, file .. " names core sources")
  end
end)

t.test("luarocks make installs a module that works", function()
  local ok, out = sh("command -v luarocks")
  t.ok(ok, "luarocks is not installed (make deps installs it)")
  local tmp = assert(os.getenv("HUSH_TEST_TMP") or os.getenv("TMPDIR") or "/tmp")
  local dir = tmp .. "/rock"
  -- A copy of the sources: luarocks builds in build.luarocks beside them.
  ok, out = sh(string.format("rm -rf %s && mkdir -p %s && cd %s && cp -r core bindings lua "
                             .. "hushcall-scm-1.rockspec CMakeLists.txt hushcall.pc.in %s/",
                             q(dir), q(dir), q(ROOT), q(dir)))
  t.ok(ok, out)
  ok, out = sh(string.format("cd %s && luarocks --lua-version 5.4 make --tree %s/tree",
                             q(dir), q(dir)))
  t.ok(ok, "luarocks make failed:\n" .. out)
  local tree_c = dir .. "/tree/lib/lua/5.4/?.so"
  local tree_l = dir .. "/tree/share/lua/5.4/?.lua"
  local script = string.format([[
    assert(package.searchpath("hushcall.core", package.cpath):find("/tree/", 1, true))
    local hushcall = require "hushcall"
    local c = assert(hushcall.new{ base_url = %q, allow_http = true, key_bits = 2048 })
    local r = assert(c:create{ model = "m", messages = { { role = "user", content = "rock" } } })
    io.write(r.choices[1].message.content)
  ]], h.peer_url)
  ok, out = sh(string.format("cd / && env LUA_CPATH=%s LUA_PATH=%s lua5.4 -e %s",
                             q(tree_c .. ";;"), q(tree_l .. ";;"), q(script)))
  t.ok(ok, out)
  t.eq(out, "echo: rock")
  sh("rm -rf " .. q(dir))
end)

t.done()
