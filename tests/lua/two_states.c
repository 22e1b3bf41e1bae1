/* two_states.c — two Lua states in two threads using hushcall.core at once.
 *
 * Each thread makes its own lua_State, requires "hushcall", makes its own
 * client against $HUSH_PEER_URL and does 20 round trips with distinct texts,
 * then submits 20 calls and drains them, waiting on hushcall.fd() with
 * poll(2), checking every answer; then, both together again, streams from
 * $HUSH_GATEWAY_URL (protocol v2): three streams in the generic-for form and
 * two at once in the fd form, each checked against the whole answer. Both
 * threads start together (a barrier) so that module loading, engine
 * start-up and the calls all overlap. Prints
 * "ok"/"not ok" per state and "N passed, N failed"; exits 0 only if both
 * passed.
 *
 * Built by the CMake target test_lua_states, which defines HUSH_LUA_CPATH and
 * HUSH_LUA_PATH; by hand:
 *   gcc -std=c11 -D_GNU_SOURCE -DHUSH_LUA_CPATH='"build/lua/?.so"' \
 *       -DHUSH_LUA_PATH='"lua/?.lua"' tests/lua/two_states.c \
 *       $(pkg-config --cflags --libs lua5.4) -lpthread -o /tmp/two_states
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#ifndef HUSH_LUA_CPATH
#error "define HUSH_LUA_CPATH, e.g. -DHUSH_LUA_CPATH='\"build/lua/?.so\"'"
#endif
#ifndef HUSH_LUA_PATH
#error "define HUSH_LUA_PATH, e.g. -DHUSH_LUA_PATH='\"lua/?.lua\"'"
#endif

#define STATES 2

static const char CHUNK[] =
    "local id, peer = ...\n"
    "local hushcall = require 'hushcall'\n"
    "local client = assert(hushcall.new{ base_url = peer, allow_http = true, key_bits = 2048 })\n"
    "local function chat(text)\n"
    "  return { model = 'state-' .. id, messages = { { role = 'user', content = text } } }\n"
    "end\n"
    "for i = 1, 20 do\n"
    "  local text = string.format('state %d round %d', id, i)\n"
    "  local resp, err = client:create(chat(text))\n"
    "  if not resp then error(text .. ': ' .. tostring(err)) end\n"
    "  local got = resp.choices[1].message.content\n"
    "  if got ~= 'echo: ' .. text then error(text .. ': got ' .. tostring(got)) end\n"
    "  if resp.model ~= 'state-' .. id then error(text .. ': model ' .. tostring(resp.model)) end\n"
    "  resp:wipe()\n"
    "end\n"
    "local want, pending = {}, 0\n"
    "for i = 1, 20 do\n"
    "  local text = string.format('state %d call %d', id, i)\n"
    "  local call, err = client:submit(chat(text))\n"
    "  if not call then error(text .. ': ' .. tostring(err)) end\n"
    "  want[call] = text\n"
    "  pending = pending + 1\n"
    "end\n"
    "local fd = hushcall.fd()\n"
    "local waits = 0\n"
    "while pending > 0 do\n"
    "  local r = fd_readable(fd, 30000)\n"
    "  if not r then error('fd ' .. fd .. ' not readable within 30 s, ' .. pending .. ' pending') end\n"
    "  local batch = hushcall.drain()\n"
    "  if #batch == 0 then\n"
    "    waits = waits + 1\n"
    "    if waits > 1000 then error('the fd stays readable with nothing to drain') end\n"
    "  end\n"
    "  for _, call in ipairs(batch) do\n"
    "    local text = want[call]\n"
    "    if not text then error('drained a call this state did not submit') end\n"
    "    want[call] = nil\n"
    "    pending = pending - 1\n"
    "    local resp, err = call:result()\n"
    "    if not resp then error(text .. ': ' .. tostring(err)) end\n"
    "    local got = resp.choices[1].message.content\n"
    "    if got ~= 'echo: ' .. text then error(text .. ': got ' .. tostring(got)) end\n"
    "  end\n"
    "end\n"
    "if #hushcall.drain() ~= 0 then error('drain() returned calls after all 20 came back') end\n"
    "if fd_readable(fd, 0) then error('the fd is still readable after everything was drained') end\n"
    "return fd\n";

/* The streaming phase: (id, gateway URL, API key). */
static const char STREAM_CHUNK[] =
    "local id, gateway, key = ...\n"
    "local hushcall = require 'hushcall'\n"
    "local client = assert(hushcall.new{ base_url = gateway, allow_http = true, api_key = key,\n"
    "                                    protocol = 'v2', max_retries = 0 })\n"
    "local function chat(text, stream)\n"
    "  return { model = 'state-' .. id, stream = stream,\n"
    "           messages = { { role = 'user', content = text } } }\n"
    "end\n"
    "local function piece(chunk)\n"
    "  local choice = chunk.choices[1]\n"
    "  local content = choice and choice.delta.content\n"
    "  return type(content) == 'string' and content or ''\n"
    "end\n"
    "local function whole(text)\n"
    "  local resp = assert(client:create(chat(text)))\n"
    "  return resp.choices[1].message.content\n"
    "end\n"
    "for i = 1, 3 do\n"
    "  local text = string.format('state %d loop stream %d of a few words', id, i)\n"
    "  local got = {}\n"
    "  for chunk in assert(client:stream(chat(text))) do\n"
    "    got[#got + 1] = piece(chunk)\n"
    "    chunk:wipe()\n"
    "  end\n"
    "  if table.concat(got) ~= whole(text) then error(text .. ': the chunks differ') end\n"
    "end\n"
    "local texts, got, ended = {}, {}, 0\n"
    "for i = 1, 2 do\n"
    "  local text = string.format('state %d fd stream %d of a few words', id, i)\n"
    "  local s = assert(client:submit(chat(text, true)))\n"
    "  texts[s], got[s] = text, {}\n"
    "end\n"
    "local fd = hushcall.fd()\n"
    "while ended < 2 do\n"
    "  if not fd_readable(fd, 30000) then error('no stream announced within 30 s') end\n"
    "  for _, s in ipairs(hushcall.drain()) do\n"
    "    if not texts[s] then error('drained a stream this state did not submit') end\n"
    "    while true do\n"
    "      local chunk, err = s:next_chunk()\n"
    "      if chunk == nil then\n"
    "        if err then error(texts[s] .. ': ' .. tostring(err)) end\n"
    "        ended = ended + 1\n"
    "      end\n"
    "      if not chunk then break end\n"
    "      table.insert(got[s], piece(chunk))\n"
    "    end\n"
    "  end\n"
    "end\n"
    "for s, text in pairs(texts) do\n"
    "  if table.concat(got[s]) ~= whole(text) then error(text .. ': the chunks differ') end\n"
    "end\n"
    "return fd\n";

typedef struct state_run {
    int id;
    const char *peer;
    const char *gateway;
    const char *gateway_key;
    pthread_barrier_t *start;
    pthread_barrier_t *streams;
    pthread_barrier_t *finish;
    int ok;
    int fd;
    char message[2048];
} state_run;

/* fd_readable(fd, timeout_ms) -> boolean: poll(2) for POLLIN. */
static int l_fd_readable(lua_State *L)
{
    struct pollfd p = {.fd = (int)luaL_checkinteger(L, 1), .events = POLLIN};
    int timeout = (int)luaL_optinteger(L, 2, 0);
    int n;
    do
        n = poll(&p, 1, timeout);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return luaL_error(L, "poll: %s", strerror(errno));
    lua_pushboolean(L, n > 0 && (p.revents & POLLIN));
    return 1;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL)
        msg = luaL_tolstring(L, 1, NULL);
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static void set_path(lua_State *L, const char *field, const char *value)
{
    lua_getglobal(L, "package");
    lua_pushstring(L, value);
    lua_setfield(L, -2, field);
    lua_pop(L, 1);
}

static void open_state(lua_State *L)
{
    luaL_openlibs(L);
    set_path(L, "cpath", HUSH_LUA_CPATH);
    set_path(L, "path", HUSH_LUA_PATH);
    lua_register(L, "fd_readable", l_fd_readable);
}

/* Run `chunk` with (id, url, key); false with run->message set on failure. */
static bool run_chunk(lua_State *L, state_run *run, const char *name, const char *chunk,
                      size_t len, const char *url, const char *key)
{
    lua_pushcfunction(L, traceback);
    if (luaL_loadbuffer(L, chunk, len, name) != LUA_OK) {
        snprintf(run->message, sizeof run->message, "%s", lua_tostring(L, -1));
        lua_settop(L, 0);
        return false;
    }
    lua_pushinteger(L, run->id);
    lua_pushstring(L, url);
    lua_pushstring(L, key);
    bool ok = lua_pcall(L, 3, 1, -5) == LUA_OK;
    if (!ok) {
        const char *m = lua_tostring(L, -1);
        snprintf(run->message, sizeof run->message, "%s: %s", name,
                 m ? m : "(error object is not a string)");
    } else {
        run->fd = (int)lua_tointeger(L, -1);
    }
    lua_settop(L, 0);
    return ok;
}

static void *run_state(void *arg)
{
    state_run *run = arg;
    pthread_barrier_wait(run->start);

    lua_State *L = luaL_newstate();
    bool ok = L != NULL;
    if (!ok)
        snprintf(run->message, sizeof run->message, "luaL_newstate failed");
    else
        open_state(L);
    ok = ok && run_chunk(L, run, "=two_states", CHUNK, sizeof CHUNK - 1, run->peer, NULL);
    /* Together again, so that both states stream at once. */
    pthread_barrier_wait(run->streams);
    ok = ok && run_chunk(L, run, "=two_states_stream", STREAM_CHUNK, sizeof STREAM_CHUNK - 1,
                         run->gateway, run->gateway_key);
    run->ok = ok;
    /* Both states stay open until both are done, so that their engines'
     * fds are live together (and cannot be one number reused). */
    pthread_barrier_wait(run->finish);
    /* Closing the state frees its clients, calls and engine: that must not
     * disturb the other state. */
    if (L != NULL)
        lua_close(L);
    return NULL;
}

int main(void)
{
    const char *peer = getenv("HUSH_PEER_URL");
    const char *gateway = getenv("HUSH_GATEWAY_URL");
    const char *gateway_key = getenv("HUSH_GATEWAY_API_KEY");
    if (peer == NULL || peer[0] == '\0' || gateway == NULL || gateway[0] == '\0' ||
        gateway_key == NULL) {
        printf("not ok 1 - HUSH_PEER_URL, HUSH_GATEWAY_URL or HUSH_GATEWAY_API_KEY is not set "
               "(run through tests/lua/run.py)\n");
        printf("0 passed, 1 failed\n");
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    pthread_barrier_t start, streams, finish;
    if (pthread_barrier_init(&start, NULL, STATES) != 0 ||
        pthread_barrier_init(&streams, NULL, STATES) != 0 ||
        pthread_barrier_init(&finish, NULL, STATES) != 0) {
        printf("not ok 1 - pthread_barrier_init failed\n0 passed, 1 failed\n");
        return 1;
    }
    state_run runs[STATES];
    pthread_t threads[STATES];
    int started[STATES] = {0};
    for (int i = 0; i < STATES; i++) {
        memset(&runs[i], 0, sizeof runs[i]);
        runs[i].id = i + 1;
        runs[i].peer = peer;
        runs[i].gateway = gateway;
        runs[i].gateway_key = gateway_key;
        runs[i].start = &start;
        runs[i].streams = &streams;
        runs[i].finish = &finish;
        runs[i].fd = -1;
    }
    for (int i = 0; i < STATES; i++) {
        if (pthread_create(&threads[i], NULL, run_state, &runs[i]) != 0) {
            /* The barrier would never open: fail the whole run at once. */
            printf("not ok %d - state %d: pthread_create failed\n", i + 1, i + 1);
            printf("0 passed, %d failed\n", STATES);
            return 1;
        }
        started[i] = 1;
    }
    for (int i = 0; i < STATES; i++)
        if (started[i])
            pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start);
    pthread_barrier_destroy(&streams);
    pthread_barrier_destroy(&finish);

    int passed = 0, failed = 0, n = 0;
    for (int i = 0; i < STATES; i++) {
        n++;
        if (runs[i].ok) {
            passed++;
            printf("ok %d - state %d: 20 round trips, 20 drained calls, 5 streams\n", n, runs[i].id);
        } else {
            failed++;
            printf("not ok %d - state %d\n", n, runs[i].id);
            for (char *line = strtok(runs[i].message, "\n"); line; line = strtok(NULL, "\n"))
                printf("#   %s\n", line);
        }
    }
    n++;
    if (runs[0].ok && runs[1].ok) {
        if (runs[0].fd != runs[1].fd) {
            passed++;
            printf("ok %d - each state has its own engine (fds %d and %d)\n", n, runs[0].fd,
                   runs[1].fd);
        } else {
            failed++;
            printf("not ok %d - both states got engine fd %d: one engine is shared\n", n,
                   runs[0].fd);
        }
    } else {
        failed++;
        printf("not ok %d - engines per state (not checked: a state failed)\n", n);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
