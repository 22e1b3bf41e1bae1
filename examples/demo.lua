-- The Lua half of `make demo`: one encrypted round trip through the gateway
-- whose URL is the first argument (protocol v2, post-quantum: require_pq), a few calls at once through the
-- engine's fd, then a streamed answer printed word by word. Run (and timed) by examples/demo.py.
local hushcall = require "hushcall"

local url = assert(arg[1], "usage: lua5.4 demo.lua <gateway url>")
local client = assert(hushcall.new{ base_url = url, allow_http = true, require_pq = true })

do
  local resp <close> = assert(client:create{
    model = "demo",
    messages = { { role = "user", content = "Hello from Lua: is this sealed?" } },
  })
  print("reply:      " .. resp.choices[1].message.content)
  local meta = resp._metadata
  print(("_metadata:  protocol=%s suite=%s key_id=%s server_key_fingerprint=%s"):format(
    meta.protocol, meta.suite, meta.key_id, meta.server_key_fingerprint))
  print("tostring:   " .. tostring(resp))
end -- <close> wipes the answer here

local calls = {}
for i = 1, 8 do
  calls[i] = assert(client:submit{
    model = "demo", messages = { { role = "user", content = "question " .. i } } })
end
local done = 0
while done < #calls do
  calls[done + 1]:wait(10)
  for _, call in ipairs(hushcall.drain()) do
    local resp = assert(call:result())
    assert(resp.choices[1].message.content:match("^echo: question %d+$"))
    resp:wipe()
    done = done + 1
  end
end
print(("async:      %d calls in flight at once, answered through hushcall.fd()/drain()")
  :format(done))

io.write("streamed:   ")
for chunk in assert(client:stream{
  model = "demo", messages = { { role = "user", content = "Stream this from Lua, word by word" } },
}) do
  local choice = chunk.choices[1] -- none in a usage chunk
  local delta = choice and choice.delta.content
  if type(delta) == "string" then
    io.write(delta)
    io.flush()
  end
  chunk:wipe()
end
print()
