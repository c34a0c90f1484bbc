/* sensiformer._engine.Model: owns an sf_model; parameters are exposed as zero-copy views; a busy flag
 * lets one call at a time use it. (Its operations are the functions of py_ops.c and py_probes.c.) */
#include "py_util.h"

#include <time.h>

int sf_py_model_ready(SfModelObject *m) {
    if (!m->model) {
        PyErr_SetString(PyExc_RuntimeError, "the engine model was not initialised");
        return -1;
    }
    return 0;
}

int sf_py_model_acquire(SfModelObject *m) {
    if (sf_py_model_ready(m) < 0) return -1;
    if (m->busy) {
        PyErr_SetString(PyExc_RuntimeError, "this model is being used by another call (one thread at a time per model)");
        return -1;
    }
    m->busy = SF_BUSY_ENGINE;
    return 0;
}

/* For a training stretch: a Python-side hold (a save, a state dict, a parameter read between
 * stretches) lasts a moment, so fit waits for it rather than failing the run; another engine call
 * still refuses it. The flag changes only under the GIL, so checking it with the GIL held is
 * race-free; the GIL is released while sleeping. */
int sf_py_model_acquire_waiting(SfModelObject *m) {
    if (sf_py_model_ready(m) < 0) return -1;
    while (m->busy == SF_BUSY_PYTHON) {
        Py_BEGIN_ALLOW_THREADS
        nanosleep(&(struct timespec){0, 200000}, NULL);
        Py_END_ALLOW_THREADS
        if (PyErr_CheckSignals() < 0) return -1;
    }
    return sf_py_model_acquire(m);
}

void sf_py_model_release(SfModelObject *m) { m->busy = 0; }

/* Model(*, n_positions, d_model, n_heads, n_layers, d_ff, norm, final_norm, ln_eps, activation, dtype, seed,
 *       identical_layers, kind=encoder, n_decoder_layers=0, norm_type=layer, positional=concat,
 *       rope_base=10000) */
static int model_init(SfModelObject *self, PyObject *args, PyObject *kw) {
    sf_config c = {.kind = SF_MODEL_ENCODER, .norm_type = SF_NORM_LAYER, .positional = SF_POS_CONCAT,
                   .rope_base = 10000.0};
    int norm, act, dtype, kind = c.kind, norm_type = c.norm_type, positional = c.positional, identical;
    uint64_t seed;
    const sf_py_arg table[] = {
        SF_ARG("n_positions", SF_ARG_INT, &c.n_positions), SF_ARG("d_model", SF_ARG_INT, &c.d_model),
        SF_ARG("n_heads", SF_ARG_INT, &c.n_heads), SF_ARG("n_layers", SF_ARG_INT, &c.n_layers),
        SF_ARG("d_ff", SF_ARG_INT, &c.d_ff), SF_ARG("norm", SF_ARG_INT, &norm),
        SF_ARG("final_norm", SF_ARG_BOOL, &c.final_norm), SF_ARG("ln_eps", SF_ARG_DOUBLE, &c.ln_eps),
        SF_ARG("activation", SF_ARG_INT, &act), SF_ARG("dtype", SF_ARG_INT, &dtype),
        SF_ARG("seed", SF_ARG_UINT64, &seed), SF_ARG("identical_layers", SF_ARG_BOOL, &identical),
        SF_ARG_OPTIONAL("kind", SF_ARG_INT, &kind), SF_ARG_OPTIONAL("n_decoder_layers", SF_ARG_INT, &c.n_decoder_layers),
        SF_ARG_OPTIONAL("norm_type", SF_ARG_INT, &norm_type), SF_ARG_OPTIONAL("positional", SF_ARG_INT, &positional),
        SF_ARG_OPTIONAL("rope_base", SF_ARG_DOUBLE, &c.rope_base)};
    if (sf_py_parse("Model", args, kw, SF_ARGS(table)) < 0) return -1;
    c.norm = norm, c.activation = act, c.dtype = dtype, c.kind = kind, c.norm_type = norm_type;
    c.positional = positional;
    if (self->model) {
        PyErr_SetString(PyExc_RuntimeError, "Model is already initialised");
        return -1;
    }
    sf_status st = sf_model_create(&c, seed, identical, &self->model);
    if (st) {
        sf_py_raise(st);
        return -1;
    }
    return 0;
}

static void model_dealloc(SfModelObject *self) {
    sf_model_free(self->model);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *model_tensors(SfModelObject *self, PyObject *noargs) {
    if (sf_py_model_ready(self) < 0) return NULL;
    int n = sf_model_num_tensors(self->model);
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (int i = 0; i < n; i++) {
        const sf_tensor_info *t = sf_model_tensor(self->model, i);
        PyObject *shape = t->ndim == 2 ? Py_BuildValue("(LL)", (long long)t->shape[0], (long long)t->shape[1])
                                       : Py_BuildValue("(L)", (long long)t->shape[0]);
        PyObject *item = shape ? Py_BuildValue("(sNLLii)", t->name, shape, (long long)t->offset, (long long)t->size,
                                               (int)t->kind, t->layer)
                               : NULL;
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *model_flat(SfModelObject *self, PyObject *arg) {
    if (sf_py_model_ready(self) < 0) return NULL;
    const char *which = PyUnicode_AsUTF8(arg);
    if (!which) return NULL;
    void *data;
    if (!strcmp(which, "params")) data = sf_model_params(self->model);
    else if (!strcmp(which, "grads")) data = sf_model_grads(self->model);
    else return PyErr_Format(PyExc_ValueError, "flat() takes 'params' or 'grads', got %R", arg);
    npy_intp n = (npy_intp)sf_model_num_params(self->model);
    return sf_py_view((PyObject *)self, data, 1, &n, sf_py_typenum(sf_model_config(self->model)->dtype), 1);
}

struct reinit_call {
    sf_model *model;
    uint64_t seed;
    int identical;
};

static sf_status reinit_body(void *p, sf_stop_hook stop, void *stop_ctx) {
    struct reinit_call *c = p;
    return sf_model_reinit(c->model, c->seed, c->identical);
}

/* reinit(*, seed, identical_layers): draw the parameters again */
static PyObject *model_reinit(SfModelObject *self, PyObject *args, PyObject *kw) {
    struct reinit_call c = {0};
    const sf_py_arg table[] = {SF_ARG("seed", SF_ARG_UINT64, &c.seed),
                               SF_ARG("identical_layers", SF_ARG_BOOL, &c.identical)};
    if (sf_py_model_ready(self) < 0 || sf_py_parse("reinit", args, kw, SF_ARGS(table)) < 0) return NULL;
    c.model = self->model;
    if (sf_py_run(self, 0, reinit_body, &c) < 0) return NULL;
    Py_RETURN_NONE;
}

/* The busy flag as a Python-side guard: reads and writes of the parameter buffer from Python
 * (saves, state dicts, the flat setter) take it like an engine call, so they are refused while
 * another thread is inside one instead of seeing or making a half-updated model. */
static PyObject *model_acquire(SfModelObject *self, PyObject *noargs) {
    if (sf_py_model_acquire(self) < 0) return NULL;
    self->busy = SF_BUSY_PYTHON;
    Py_RETURN_NONE;
}

static PyObject *model_release(SfModelObject *self, PyObject *noargs) {
    sf_py_model_release(self);
    Py_RETURN_NONE;
}

static PyObject *model_get_num_params(SfModelObject *self, void *closure) {
    if (sf_py_model_ready(self) < 0) return NULL;
    return PyLong_FromLongLong(sf_model_num_params(self->model));
}

static PyObject *model_get_last_threads(SfModelObject *self, void *closure) {
    if (sf_py_model_ready(self) < 0) return NULL;
    return PyLong_FromLong(sf_model_last_threads(self->model));
}

static PyObject *model_get_workspace_bytes(SfModelObject *self, void *closure) {
    if (sf_py_model_ready(self) < 0) return NULL;
    return PyLong_FromSize_t(sf_model_workspace_bytes(self->model));
}

static PyMethodDef model_methods[] = {
    {"tensors", (PyCFunction)model_tensors, METH_NOARGS, "[(name, shape, offset, size, kind, layer), ...]"},
    {"flat", (PyCFunction)model_flat, METH_O, "flat('params' | 'grads'): a writable view of the whole buffer"},
    {"reinit", SF_PY_KEYWORDS(model_reinit), "reinit(*, seed, identical_layers)"},
    {"acquire", (PyCFunction)model_acquire, METH_NOARGS,
     "acquire(): take the busy flag (RuntimeError if another call holds it); pair with release()"},
    {"release", (PyCFunction)model_release, METH_NOARGS, "release(): give the busy flag back"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef model_getset[] = {
    {"num_params", (getter)model_get_num_params, NULL, "number of parameters", NULL},
    {"last_threads", (getter)model_get_last_threads, NULL, "team size of the last parallel call", NULL},
    {"workspace_bytes", (getter)model_get_workspace_bytes, NULL, "bytes of the activation workspace", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject SfModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sensiformer._engine.Model",
    .tp_basicsize = sizeof(SfModelObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Engine-side model (private: use sensiformer.Transformer).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)model_init,
    .tp_dealloc = (destructor)model_dealloc,
    .tp_methods = model_methods,
    .tp_getset = model_getset,
};
