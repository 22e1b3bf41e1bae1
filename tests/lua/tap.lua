-- tap.lua — a tiny TAP-style runner for the Lua binding's tests.
--   local t = require "tap"
--   t.test("name", function() t.eq(1, 1) end)
--   t.done()   -- prints "N passed, N failed" and exits (non-zero on any failure,
--              -- and when no test ran at all)
local M = {}

local passed, failed, count = 0, 0, 0

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

local function fail(msg, level)
  error(msg, (level or 1) + 1)
end

local function indent(text)
  return (tostring(text):gsub("\n", "\n#   "))
end

function M.test(name, fn)
  count = count + 1
  local ok, err = xpcall(fn, function(e)
    local text = type(e) == "string" and e or (tostring(e))
    local lines = {}
    for line in debug.traceback("", 2):gmatch("[^\n]+") do
      if not (line:find("tap.lua", 1, true) or line:find("[C]:", 1, true)
              or line == "stack traceback:") then
        lines[#lines + 1] = line
      end
    end
    return text .. "\n" .. table.concat(lines, "\n")
  end)
  if ok then
    passed = passed + 1
    print(string.format("ok %d - %s", count, name))
  else
    failed = failed + 1
    print(string.format("not ok %d - %s", count, name))
    print("#   " .. indent(err))
  end
  io.stdout:flush()
  return ok
end

function M.eq(a, b, msg)
  if a ~= b or math.type(a) ~= math.type(b) then
    fail(string.format("%sexpected %s (%s), got %s (%s)", msg and (msg .. ": ") or "",
                       show(b), math.type(b) or type(b), show(a), math.type(a) or type(a)), 2)
  end
end

function M.ok(v, msg)
  if not v then
    fail(msg or "expected a true value, got " .. show(v), 2)
  end
  return v
end

-- Asserts that fn raises an error whose message matches the Lua pattern.
-- Returns the message.
function M.raises(fn, pattern, msg)
  local ok, err = pcall(fn)
  if ok then
    fail((msg and (msg .. ": ") or "") .. "expected an error matching " .. show(pattern)
         .. ", but none was raised", 2)
  end
  local text = tostring(err)
  if pattern and not text:find(pattern) then
    fail((msg and (msg .. ": ") or "") .. "error " .. show(text) .. " does not match "
         .. show(pattern), 2)
  end
  return text
end

-- Plain substring check (no patterns).
function M.contains(s, sub, msg)
  if type(s) ~= "string" or not s:find(sub, 1, true) then
    fail((msg and (msg .. ": ") or "") .. show(s) .. " does not contain " .. show(sub), 2)
  end
end

function M.not_contains(s, sub, msg)
  if type(s) == "string" and s:find(sub, 1, true) then
    fail((msg and (msg .. ": ") or "") .. show(s) .. " contains " .. show(sub), 2)
  end
end

function M.done()
  if count == 0 then
    print("not ok - no test ran")
    failed = failed + 1
  end
  print(string.format("%d passed, %d failed", passed, failed))
  io.stdout:flush()
  -- Close the state first: every client, call and response is collected
  -- (and, under a sanitizer, anything left behind shows up).
  os.exit(failed == 0 and 0 or 1, true)
end

return M
