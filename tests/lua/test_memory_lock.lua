-- test_memory_lock.lua — the mlock limit exhausted, in Lua (docs/lua.md
-- "Locked memory"): a child lua5.4 started with RLIMIT_MEMLOCK 0 and
-- CAP_IPC_LOCK dropped (prlimit and setpriv, util-linux: the tests run as
-- root, whose capability ignores the limit) gets the right answers, sees
-- resp:locked() false on every answer and chunk, and Lua's warn() says so
-- once. The same child under the ordinary limit is the control: locked,
-- and no warning.
local t = require "tap"
local hushcall = require "hushcall"

local STARVED = "prlimit --memlock=0:0 setpriv --bounding-set=-ipc_lock --inh-caps=-ipc_lock "
local WARNING = "Lua warning: hushcall could not lock plaintext memory"

-- Runs the child (after `prefix`); what it printed, and its warnings counted.
local function run_child(prefix)
  local p = assert(io.popen(prefix .. "lua5.4 -W tests/lua/memory_lock_child.lua 2>&1"))
  local report = { texts = {}, locked = {}, warnings = 0 }
  for line in p:lines() do
    local text = line:match("^text (.*)$")
    if text then report.texts[#report.texts + 1] = text end
    local locked = line:match("^locked (%a+)$")
    if locked then report.locked[#report.locked + 1] = locked == "true" end
    local failures = line:match("^lock_failures (%d+)$")
    if failures then report.lock_failures = math.tointeger(tonumber(failures)) end
    if line:find(WARNING, 1, true) then report.warnings = report.warnings + 1 end
  end
  local ok, how, code = p:close()
  t.ok(ok, "the child ran to its end: " .. tostring(how) .. " " .. tostring(code))
  return report
end

local function answers_right(report)
  t.eq(table.concat(report.texts, "|"),
       "echo: lock 1|echo: lock 2|echo: lock 3|echo: streamed words")
  t.ok(#report.locked > 4, "every answer and chunk reported: " .. #report.locked)
end

local function all_equal(list, value)
  for _, v in ipairs(list) do if v ~= value then return false end end
  return true
end

t.test("without locked memory: right answers, locked() false, one warning", function()
  t.ok(os.execute("command -v prlimit >/dev/null && command -v setpriv >/dev/null"),
       "prlimit and setpriv (util-linux) are installed")
  local report = run_child(STARVED)
  answers_right(report)
  t.ok(report.lock_failures > 0, "the limit bit in the child: " .. tostring(report.lock_failures))
  t.ok(all_equal(report.locked, false), "no answer or chunk locked")
  t.eq(report.warnings, 1)
end)

t.test("the control: locked() true, no warning", function()
  local report = run_child("")
  answers_right(report)
  t.eq(report.lock_failures, 0)
  t.ok(all_equal(report.locked, true), "every answer and chunk locked")
  t.eq(report.warnings, 0)
end)

t.done()
