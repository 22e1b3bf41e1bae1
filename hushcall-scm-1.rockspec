-- hushcall for Lua 5.4: the C module hushcall.core (libhushcall's sources and
-- bindings/lua/) and the Lua layer hushcall (lua/hushcall.lua).
-- luarocks --lua-version 5.4 make   (needs libssl-dev, libcurl4-openssl-dev, libtss2-dev)
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
build = {
  type = "builtin",
  modules = {
    hushcall = "lua/hushcall.lua",
    ["hushcall.core"] = {
      sources = {
        "core/src/error.c", "core/src/init.c", "core/src/secmem.c", "core/src/json_text.c",
        "core/src/fileread.c",
        "core/src/json.c", "core/src/json_writer.c", "core/src/base64.c", "core/src/keys.c",
        "core/src/envelope_v1.c", "core/src/response.c", "core/src/client.c",
        "core/src/engine.c", "core/src/echo.c", "core/src/upstream.c", "core/src/replay.c", "core/src/server.c",
        "core/src/attest.c", "core/src/tpm.c",
        "bindings/lua/module.c", "bindings/lua/serialize.c", "bindings/lua/response.c",
        "bindings/lua/client.c", "bindings/lua/keys.c",
      },
      incdirs = { "core/include", "core/src" },
      libraries = { "crypto", "curl", "tss2-esys", "tss2-mu", "tss2-tctildr", "tss2-rc",
                    "pthread" },
      defines = { "_GNU_SOURCE" },
    },
  },
  -- The builtin type takes no compiler flags per module: the sources are
  -- C11 and build under the compiler's default (gnu17) as well; for exactly
  -- what CMake does, pass CFLAGS="-O2 -fPIC -std=c11" to luarocks make.
}
