/* replay.c — ReplayCache: the gateway's in-process replay store over
 * hush_replay_cache (replay.h). Python keeps only the policy (what a
 * verdict answers with); the records and their bounds live in the core. */
#include "hushpy.h"


typedef struct {
    PyObject_HEAD
    hush_replay_cache *cache; /* NULL only if __init__ failed */
} ReplayCacheObject;

static const char *const verdict_names[] = {
    [HUSH_REPLAY_NEW] = "new",
    [HUSH_REPLAY_RETRY] = "retry",
    [HUSH_REPLAY_REPLAYED] = "replayed",
    [HUSH_REPLAY_EXHAUSTED] = "exhausted",
};

static int replay_cache_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    ReplayCacheObject *self = (ReplayCacheObject *)op;
    hushpy_state *st = PyType_GetModuleState(Py_TYPE(op));
    char *keywords[] = {"max_entries", "max_answers", NULL};
    Py_ssize_t max_entries = HUSH_REPLAY_DEFAULT_MAX_ENTRIES;
    int max_answers = HUSH_REPLAY_DEFAULT_MAX_ANSWERS;
    if (self->cache != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ReplayCache is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|n$i:ReplayCache", keywords, &max_entries,
                                     &max_answers))
        return -1;
    if (max_entries < 1 || max_answers < 1) {
        PyErr_SetString(PyExc_ValueError, "max_entries and max_answers must be at least 1");
        return -1;
    }
    hush_error err;
    hush_status status =
        hush_replay_cache_new((size_t)max_entries, (unsigned)max_answers, &self->cache, &err);
    if (status == HUSH_E_ARGUMENT) {
        PyErr_SetString(PyExc_ValueError, err.message);
        return -1;
    }
    if (status != HUSH_OK) {
        hushpy_raise(st, status, &err);
        return -1;
    }
    return 0;
}

static void replay_cache_dealloc(PyObject *op)
{
    ReplayCacheObject *self = (ReplayCacheObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    hush_replay_cache_free(self->cache);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static int digest_arg(const Py_buffer *b, const char *name)
{
    if (b->len != HUSH_REPLAY_DIGEST_BYTES) {
        PyErr_Format(PyExc_ValueError, "%s must be %u bytes", name, HUSH_REPLAY_DIGEST_BYTES);
        return -1;
    }
    return 0;
}

static PyObject *replay_cache_check(PyObject *op, PyObject *args, PyObject *kwargs)
{
    ReplayCacheObject *self = (ReplayCacheObject *)op;
    char *keywords[] = {"digest", "binding", "now", "expires", NULL};
    Py_buffer digest, binding;
    double now, expires;
    PyObject *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*y*dd:check_and_remember", keywords,
                                     &digest, &binding, &now, &expires))
        return NULL;
    if (self->cache == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ReplayCache was not initialised");
    } else if (digest_arg(&digest, "digest") == 0 && digest_arg(&binding, "binding") == 0) {
        hush_replay_verdict verdict;
        unsigned answers;
        hush_error err;
        /* Quick and under the cache's own lock: no reason to drop the GIL. */
        if (hush_replay_cache_check_and_remember(self->cache, digest.buf, binding.buf, now,
                                                 expires, &verdict, &answers, &err) != HUSH_OK)
            PyErr_SetString(PyExc_ValueError, err.message);
        else
            result = Py_BuildValue("(sI)", verdict_names[verdict], answers);
    }
    PyBuffer_Release(&digest);
    PyBuffer_Release(&binding);
    return result;
}

static PyObject *replay_cache_stats(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    hush_replay_stats stats;
    hush_replay_cache_stats(((ReplayCacheObject *)op)->cache, &stats);
    return Py_BuildValue("{s:n,s:n,s:K,s:n}", "entries", (Py_ssize_t)stats.entries,
                         "max_entries", (Py_ssize_t)stats.max_entries, "evicted",
                         (unsigned long long)stats.evicted, "bytes_reserved",
                         (Py_ssize_t)stats.bytes_reserved);
}

static PyMethodDef replay_cache_methods[] = {
    {"check_and_remember", (PyCFunction)(void (*)(void))replay_cache_check,
     METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("check_and_remember($self, /, digest, binding, now, expires)\n--\n\n"
               "Look a request's 32-byte digest up and remember it until `expires`\n"
               "(seconds on the clock `now` is read from, such as time.time()).\n"
               "Returns (verdict, answers): verdict 'new' or 'retry' (answer it; the\n"
               "count includes this one), 'replayed' (seen with another binding) or\n"
               "'exhausted' (answered max_answers times already).")},
    {"stats", replay_cache_stats, METH_NOARGS,
     PyDoc_STR("stats($self, /)\n--\n\n"
               "{'entries', 'max_entries', 'evicted', 'bytes_reserved'}: evicted counts\n"
               "entries forgotten before their expiry because the cache was full.")},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot replay_cache_slots[] = {
    {Py_tp_init, replay_cache_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, replay_cache_dealloc},
    {Py_tp_methods, replay_cache_methods},
    {Py_tp_doc, (void *)PyDoc_STR(
         "ReplayCache(max_entries=1000000, *, max_answers=3)\n--\n\n"
         "The requests a gateway has opened, by digest (hush_replay_cache): at most\n"
         "max_entries, the oldest forgotten first when full. Thread-safe.")},
    {0, NULL},
};

PyType_Spec hushpy_replay_cache_spec = {
    .name = "hushcall._core.ReplayCache",
    .basicsize = sizeof(ReplayCacheObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = replay_cache_slots,
};
