-- hushcall for Lua 5.4: the C module hushcall.core (libhushcall's sources and
-- bindings/lua/) and the Lua layer hushcall (lua/hushcall.lua).
-- luarocks --lua-version 5.4 make   (needs cmake, libssl-dev, libcurl4-openssl-dev, libtss2-dev)
rockspec_format = "3.0"
package = "hushcall"
version = "scm-1"
source = {
  url = "git+file://.",
}
description = {
  summary = "NOMYO's end-to-end encrypted chat protocol, with plaintext kept in locked memory",
  detailed = [[
Requests are written from Lua tables straight into locked memory, answers are
userdata views over the decrypted document in locked memory, and only the
strings you read become Lua strings.]],
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
-- Built through CMake, the one build description (CMakeLists.txt): its
-- source list and flags, the Lua module and lua/hushcall.lua installed into
-- the rock's directories; no tests, no C library of its own.
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "RelWithDebInfo",
    HUSH_BUILD_TESTS = "OFF",
    HUSH_INSTALL_LIBRARY = "OFF",
    HUSH_LUA_CMOD_DIR = "$(LIBDIR)",
    HUSH_LUA_LMOD_DIR = "$(LUADIR)",
  },
}
