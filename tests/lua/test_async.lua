-- test_async.lua — client:submit, hushcall.fd/drain, and the call object:
-- ready, result, wait, cancel, payload_id, attempts.
local t = require "tap"
local h = require "helpers"
local hushcall = require "hushcall"

local client = h.peer_client(hushcall)
local strict = h.peer_client(hushcall, { max_retries = 0 })

-- Readiness of the engine's fd, read from /proc/self/fdinfo (it is an
-- eventfd): true/false, or nil when that cannot be told.
local function readable()
  local n = h.eventfd_count(hushcall.fd())
  if n == nil then return nil end
  return n > 0
end

-- Drain until every call in `want` (a set) has come back; returns the list of
-- drained calls (extras included) and the number of drain() calls that
-- returned something.
local function drain_until(want, seconds)
  local got, missing = {}, 0
  for _ in pairs(want) do missing = missing + 1 end
  local deadline = h.now() + (seconds or 60)
  while missing > 0 do
    local batch = hushcall.drain()
    t.eq(type(batch), "table")
    for _, call in ipairs(batch) do
      got[#got + 1] = call
      if want[call] then
        want[call] = nil
        missing = missing - 1
      end
    end
    if missing > 0 then
      assert(h.now() < deadline, missing .. " calls never came back from drain()")
      if #batch == 0 then
        local any = next(want)
        any:wait(0.05)
      end
    end
  end
  return got
end

t.test("fd is a file descriptor, and the same one each time", function()
  local fd = hushcall.fd()
  t.eq(math.type(fd), "integer")
  t.ok(fd >= 0, "fd >= 0")
  t.eq(hushcall.fd(), fd)
  t.eq(type(hushcall.drain()), "table")
  t.eq(#hushcall.drain(), 0, "nothing to drain")
end)

t.test("200 submitted calls are drained, each with its answer, exactly once", function()
  local submitted, by_call, count = {}, {}, 200
  local started = h.now()
  for i = 1, count do
    local call, err = client:submit(h.chat("async question " .. i))
    t.ok(call, tostring(err))
    t.eq(type(call), "userdata")
    submitted[call] = true
    by_call[call] = i
  end
  t.ok(h.now() - started < 30, "submit returns at once")
  local want = {}
  for c in pairs(submitted) do want[c] = true end
  local got = drain_until(want, 120)
  t.eq(#got, count, "drained exactly the submitted calls")
  local seen = {}
  for _, call in ipairs(got) do
    t.ok(submitted[call], "a drained call that was not submitted")
    t.ok(not seen[call], "a call drained twice")
    seen[call] = true
    t.eq(call:ready(), true)
    local resp, err = call:result()
    t.ok(resp, tostring(err))
    t.eq(resp.choices[1].message.content, "echo: async question " .. by_call[call])
    t.eq(call.payload_id, resp._metadata.payload_id)
    t.eq(call.attempts, 1)
  end
  t.eq(#hushcall.drain(), 0, "nothing left to drain")
  local r = readable()
  if r ~= nil then t.eq(r, false, "the fd is not readable once drained") end
end)

t.test("the fd is readable while finished calls wait to be drained", function()
  t.eq(#hushcall.drain(), 0)
  local r0 = readable()
  t.ok(r0 ~= nil, "fd " .. hushcall.fd() .. " is not an eventfd: cannot check readiness")
  t.eq(r0, false, "readable with nothing finished")
  local call = assert(client:submit(h.chat("ready?")))
  t.eq(call:wait(30), true)
  -- The engine queues a call for drain before it wakes its waiters.
  t.eq(readable(), true, "a finished call makes the fd readable")
  local batch = hushcall.drain()
  t.eq(#batch, 1)
  t.eq(batch[1], call, "drain returns the submitted call object")
  t.eq(readable(), false, "drained: not readable")
end)

t.test("create never wakes the fd: it is not the state's to drain", function()
  t.eq(#hushcall.drain(), 0)
  local resp = assert(client:create(h.chat("quiet")))
  t.eq(resp.choices[1].message.content, "echo: quiet")
  t.eq(readable(), false, "readable after a create")
  t.eq(#hushcall.drain(), 0)
end)

t.test("calls come back from drain even when the caller kept no reference", function()
  for i = 1, 5 do
    assert(client:submit(h.chat("fire and forget " .. i)))
  end
  collectgarbage("collect")
  collectgarbage("collect")
  local texts, n = {}, 0
  local deadline = h.now() + 60
  while n < 5 do
    local batch = hushcall.drain()
    for _, call in ipairs(batch) do
      local resp = assert(call:result())
      texts[resp.choices[1].message.content] = true
      n = n + 1
    end
    if #batch == 0 then
      assert(h.now() < deadline, "unreferenced calls never came back")
      local probe = assert(client:create(h.chat("probe"))) -- let time pass
      t.ok(probe)
    end
  end
  for i = 1, 5 do t.ok(texts["echo: fire and forget " .. i], "answer " .. i) end
end)

t.test("ready, result before done (pending), wait with and without a timeout", function()
  local started = h.now()
  local call = assert(client:submit(h.chat("slowly", { x_test = { delay_ms = 800 } })))
  t.ok(h.now() - started < 0.5, "submit returns at once")
  t.eq(call:ready(), false)
  local resp, err = call:result()
  t.eq(resp, nil)
  t.eq(type(err), "table")
  t.eq(err.kind, "pending")
  t.eq(call:wait(0.05), false, "not done within 50 ms")
  t.eq(call:wait(0), false)
  t.eq(call:wait(30), true)
  t.eq(call:ready(), true)
  t.eq(call:wait(0), true, "wait on a done call")
  t.eq(call:wait(), true)
  resp, err = call:result()
  t.ok(resp, tostring(err))
  t.eq(resp.choices[1].message.content, "echo: slowly")
  t.eq(type(call.payload_id), "string")
  t.eq(call.payload_id, resp._metadata.payload_id)
  t.eq(h.posts_for(call.payload_id), 1)
  local got = drain_until({ [call] = true })
  t.ok(#got >= 1)
end)

t.test("wait() without a timeout blocks until done", function()
  local call = assert(client:submit(h.chat("block", { x_test = { delay_ms = 300 } })))
  t.eq(call:wait(), true)
  t.eq(call:ready(), true)
  t.eq(assert(call:result()).choices[1].message.content, "echo: block")
  drain_until({ [call] = true })
end)

t.test("cancel ends a call with kind cancelled", function()
  local call = assert(client:submit(h.chat("never mind", { x_test = { delay_ms = 2000 } })))
  local started = h.now()
  call:cancel()
  t.eq(call:wait(5), true)
  t.ok(h.now() - started < 1.5, "cancel does not wait for the server")
  t.eq(call:ready(), true)
  local resp, err = call:result()
  t.eq(resp, nil)
  t.eq(err.kind, "cancelled")
  t.eq(err.status, nil)
  t.eq(tostring(err):sub(1, #"hushcall: cancelled: "), "hushcall: cancelled: ")
  drain_until({ [call] = true })
  -- Cancelling a finished call changes nothing.
  local done = assert(client:submit(h.chat("finished")))
  t.eq(done:wait(30), true)
  done:cancel()
  resp, err = done:result()
  t.ok(resp, tostring(err))
  t.eq(resp.choices[1].message.content, "echo: finished")
  drain_until({ [done] = true })
  -- The client still works.
  t.eq(assert(client:create(h.chat("after cancel"))).choices[1].message.content,
       "echo: after cancel")
end)

t.test("a failed call's result is nil, err with status and details", function()
  local call = assert(strict:submit(h.chat("denied", { x_test = { status = 401, detail = "nope" } })))
  t.eq(call:wait(30), true)
  local resp, err = call:result()
  t.eq(resp, nil)
  t.eq(err.kind, "unauthorized")
  t.eq(err.status, 401)
  t.eq(err.details.detail, "nope")
  t.eq(tostring(err), "hushcall: unauthorized: " .. err.message .. " (HTTP 401)")
  t.eq(call.attempts, 1)
  drain_until({ [call] = true })
end)

t.test("attempts counts the POSTs: 429 with Retry-After, then success", function()
  local call = assert(client:submit(h.chat("retry me",
    { x_test = { status = 429, retry_after = 1, times = 1 } })))
  local pid = call.payload_id
  t.eq(type(pid), "string")
  t.ok(#pid > 0)
  t.eq(call:wait(30), true)
  local resp, err = call:result()
  t.ok(resp, tostring(err))
  t.eq(resp.choices[1].message.content, "echo: retry me")
  t.eq(call.attempts, 2)
  t.eq(math.type(call.attempts), "integer")
  t.eq(call.payload_id, pid, "retries keep the payload id")
  t.eq(resp._metadata.payload_id, pid)
  t.eq(h.posts_for(pid), 2)
  drain_until({ [call] = true })
end)

t.test("calls of two clients share the state's one fd", function()
  local a = assert(client:submit(h.chat("from a")))
  local b = assert(strict:submit(h.chat("from b")))
  local got = drain_until({ [a] = true, [b] = true })
  t.eq(#got, 2)
  t.eq(assert(a:result()).choices[1].message.content, "echo: from a")
  t.eq(assert(b:result()).choices[1].message.content, "echo: from b")
end)

t.test("one engine per state, whatever the number of clients and calls", function()
  -- The engine exists by now (earlier tests used it).
  local before = h.threads()
  local clients = { client, strict }
  for i = 1, 4 do clients[#clients + 1] = h.peer_client(hushcall) end
  local want = {}
  for i = 1, 60 do
    local c = clients[(i % #clients) + 1]
    want[assert(c:submit(h.chat("threads " .. i)))] = true
  end
  local during = h.threads()
  drain_until(want)
  -- libcurl may start a short-lived resolver thread per connection: those
  -- come and go; an engine per client (an I/O thread and workers each) or a
  -- thread per call would stay or scale.
  local deadline = h.now() + 3
  local after = h.threads()
  while after ~= before and h.now() < deadline do
    client:create(h.chat("settle"))
    after = h.threads()
  end
  t.eq(after, before, "threads once 60 calls of 6 clients are done")
  t.ok(during < before + 30, string.format("threads while 60 calls run: %d, before %d",
                                           during, before))
end)

t.test("submit with a non-table raises", function()
  t.raises(function() client:submit("text") end, "bad argument")
end)

t.done()
