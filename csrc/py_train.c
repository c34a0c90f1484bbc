/* sensiformer._engine.Optimizer and the training-loop functions (train, target_eval,
 * sample_batch). Argument checks here guard the engine; user-facing validation with friendly
 * messages lives in the Python layer. */
#include "py_util.h"

/* ---- Optimizer ------------------------------------------------------------------------------- */

static int parse_optim_config(PyObject *args, PyObject *kw, sf_optim_config *c, PyObject **model) {
    static char *names[] = {"model", "kind", "lr", "beta1", "beta2", "eps", "weight_decay", "momentum",
                            "dampening", "nesterov", "decay_all", "schedule", "warmup_steps", "total_steps",
                            "min_lr", "clip_norm", NULL};
    int kind, nesterov, decay_all, schedule;
    long long warmup, total;
    memset(c, 0, sizeof *c);
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!idddddddppiLLdd", names, &SfModelType, model, &kind, &c->lr,
                                     &c->beta1, &c->beta2, &c->eps, &c->weight_decay, &c->momentum, &c->dampening,
                                     &nesterov, &decay_all, &schedule, &warmup, &total, &c->min_lr, &c->clip_norm))
        return -1;
    c->kind = kind, c->nesterov = nesterov, c->decay_norm_bias_embedding = decay_all;
    c->schedule = schedule, c->warmup_steps = warmup, c->total_steps = total;
    return 0;
}

static int optimizer_init(SfOptimizerObject *self, PyObject *args, PyObject *kw) {
    sf_optim_config c;
    PyObject *model;
    if (parse_optim_config(args, kw, &c, &model) < 0) return -1;
    SfModelObject *mo = (SfModelObject *)model;
    if (sf_py_model_ready(mo) < 0) return -1;
    if (self->opt) {
        PyErr_SetString(PyExc_RuntimeError, "Optimizer is already initialised");
        return -1;
    }
    sf_status st = sf_optimizer_create(mo->model, &c, &self->opt);
    if (st) {
        sf_py_raise(st);
        return -1;
    }
    Py_INCREF(mo);
    self->owner = mo;
    return 0;
}

static void optimizer_dealloc(SfOptimizerObject *self) {
    sf_optimizer_free(self->opt);
    Py_XDECREF(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int optimizer_ready(SfOptimizerObject *self) {
    if (!self->opt) {
        PyErr_SetString(PyExc_RuntimeError, "the engine optimizer was not initialised");
        return -1;
    }
    return 0;
}

static PyObject *optimizer_step(SfOptimizerObject *self, PyObject *args) {
    int nt;
    if (!PyArg_ParseTuple(args, "i", &nt) || optimizer_ready(self) < 0) return NULL;
    if (sf_py_model_acquire(self->owner) < 0) return NULL;
    double norm = 0;
    sf_status st;
    Py_BEGIN_ALLOW_THREADS
    st = sf_optimizer_step(self->opt, &norm, nt);
    Py_END_ALLOW_THREADS
    sf_py_model_release(self->owner);
    if (st) return sf_py_raise(st);
    return PyFloat_FromDouble(norm);
}

static PyObject *optimizer_state(SfOptimizerObject *self, PyObject *arg) {
    if (optimizer_ready(self) < 0) return NULL;
    long which = PyLong_AsLong(arg);
    if (which == -1 && PyErr_Occurred()) return NULL;
    if (which != 0 && which != 1) return PyErr_Format(PyExc_ValueError, "state(0 | 1), got %ld", which);
    npy_intp n = (npy_intp)sf_model_num_params(self->owner->model);
    return sf_py_view((PyObject *)self, sf_optimizer_state(self->opt, (int)which), 1, &n,
                      sf_py_typenum(sf_model_config(self->owner->model)->dtype), 1);
}

static PyObject *optimizer_lr_at(SfOptimizerObject *self, PyObject *arg) {
    if (optimizer_ready(self) < 0) return NULL;
    long long step = PyLong_AsLongLong(arg);
    if (step == -1 && PyErr_Occurred()) return NULL;
    return PyFloat_FromDouble(sf_optimizer_lr_at(self->opt, step));
}

static PyObject *optimizer_get_step(SfOptimizerObject *self, void *closure) {
    if (optimizer_ready(self) < 0) return NULL;
    return PyLong_FromLongLong(sf_optimizer_step_count(self->opt));
}

static int optimizer_set_step(SfOptimizerObject *self, PyObject *value, void *closure) {
    if (optimizer_ready(self) < 0) return -1;
    long long step = value ? PyLong_AsLongLong(value) : -1;
    if (step == -1 && PyErr_Occurred()) return -1;
    if (step < 0) {
        PyErr_SetString(PyExc_ValueError, "step_count must be >= 0");
        return -1;
    }
    sf_optimizer_set_step_count(self->opt, step);
    return 0;
}

static PyMethodDef optimizer_methods[] = {
    {"step", (PyCFunction)optimizer_step, METH_VARARGS, "step(n_threads) -> gradient norm before clipping"},
    {"state", (PyCFunction)optimizer_state, METH_O, "state(0 | 1): view of the first/second moment buffer"},
    {"lr_at", (PyCFunction)optimizer_lr_at, METH_O, "learning rate of the update after `step` updates"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef optimizer_getset[] = {
    {"step_count", (getter)optimizer_get_step, (setter)optimizer_set_step, "updates taken so far", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject SfOptimizerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sensiformer._engine.Optimizer",
    .tp_basicsize = sizeof(SfOptimizerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Engine-side optimizer state (private: use sensiformer.AdamW, Adam or SGD).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)optimizer_init,
    .tp_dealloc = (destructor)optimizer_dealloc,
    .tp_methods = optimizer_methods,
    .tp_getset = optimizer_getset,
};

/* ---- targets and samplers ---------------------------------------------------------------------- */

/* Holds the arrays a target/sampler borrows while the GIL is released. */
typedef struct {
    sf_target target;
    sf_sampler sampler;
    PyArrayObject *table, *subset, *data_x, *data_y;
    sf_py_target_refs options;
} data_spec;

static void data_spec_release(data_spec *s) {
    sf_py_target_refs_release(&s->options);
    Py_XDECREF(s->table);
    Py_XDECREF(s->subset);
    Py_XDECREF(s->data_x);
    Py_XDECREF(s->data_y);
}

/* target: (kind, n, table or None[, options dict]); sampler: (kind, subset or None, data_x or None,
 * data_y or None) */
static int data_spec_parse(PyObject *target, PyObject *sampler, data_spec *s) {
    memset(s, 0, sizeof *s);
    int kind, n;
    PyObject *table, *options = NULL;
    if (!PyArg_ParseTuple(target, "iiO|O", &kind, &n, &table, &options)) return -1;
    s->target.kind = kind, s->target.n = n;
    if (table != Py_None) {
        if (!(s->table = sf_py_array(table, NPY_FLOAT64, 1, "table"))) return -1;
        if (n < 0 || n > 40 || PyArray_DIM(s->table, 0) != ((npy_intp)1 << n)) {
            PyErr_Format(PyExc_ValueError, "a truth table for n=%d must have 2**n entries", n);
            return -1;
        }
        s->target.table = PyArray_DATA(s->table);
    } else if (kind == SF_TARGET_TABLE) {
        PyErr_SetString(PyExc_ValueError, "a table target needs its table");
        return -1;
    }
    if (options && sf_py_target_options(options, &s->target, &s->options) < 0) return -1;
    if (!sampler) return 0;
    PyObject *subset, *dx, *dy;
    if (!PyArg_ParseTuple(sampler, "iOOO", &kind, &subset, &dx, &dy)) return -1;
    s->sampler.kind = kind;
    if (subset != Py_None) {
        if (!(s->subset = sf_py_array(subset, NPY_INT64, 1, "train_subset"))) return -1;
        s->sampler.subset = PyArray_DATA(s->subset);
        s->sampler.subset_size = PyArray_DIM(s->subset, 0);
    }
    if (dx != Py_None) {
        /* a prefix target's dataset has a label per position: y (rows, width) */
        const int y_dims = s->target.prefix ? 2 : 1;
        if (!(s->data_x = sf_py_array(dx, NPY_UINT8, 2, "x")) || !(s->data_y = sf_py_array(dy, NPY_FLOAT64, y_dims, "y")))
            return -1;
        if (PyArray_DIM(s->data_y, 0) != PyArray_DIM(s->data_x, 0) ||
            (y_dims == 2 && PyArray_DIM(s->data_y, 1) != PyArray_DIM(s->data_x, 1))) {
            PyErr_SetString(PyExc_ValueError, "x and y must have the same number of rows (and, per position, columns)");
            return -1;
        }
        s->sampler.data_x = PyArray_DATA(s->data_x);
        s->sampler.data_y = PyArray_DATA(s->data_y);
        s->sampler.data_rows = PyArray_DIM(s->data_x, 0);
        s->sampler.data_width = (int)PyArray_DIM(s->data_x, 1);
    }
    if (kind == SF_SAMPLE_SUBSET && !s->subset) {
        PyErr_SetString(PyExc_ValueError, "the subset sampler needs train_subset");
        return -1;
    }
    if (kind == SF_SAMPLE_DATASET && !s->data_x) {
        PyErr_SetString(PyExc_ValueError, "the dataset sampler needs x and y");
        return -1;
    }
    return 0;
}

static PyObject *py_target_eval(PyObject *self, PyObject *args) {
    PyObject *target, *xo;
    if (!PyArg_ParseTuple(args, "OO", &target, &xo)) return NULL;
    data_spec s;
    PyArrayObject *x = NULL;
    PyObject *y = NULL;
    if (data_spec_parse(target, NULL, &s) == 0 && (x = sf_py_array(xo, NPY_UINT8, 2, "x"))) {
        npy_intp shape[2] = {PyArray_DIM(x, 0), PyArray_DIM(x, 1)}, B = shape[0];
        if ((y = PyArray_SimpleNew(s.target.prefix ? 2 : 1, shape, NPY_FLOAT64))) {
            sf_status st;
            Py_BEGIN_ALLOW_THREADS
            st = sf_target_eval(&s.target, PyArray_DATA(x), B, (int)PyArray_DIM(x, 1), PyArray_DATA((PyArrayObject *)y));
            Py_END_ALLOW_THREADS
            if (st) {
                Py_CLEAR(y);
                sf_py_raise(st);
            }
        }
    }
    Py_XDECREF(x);
    data_spec_release(&s);
    return y;
}

static PyObject *py_sample_batch(PyObject *self, PyObject *args) {
    PyObject *target, *sampler;
    unsigned long long seed;
    long long step;
    int B, T;
    if (!PyArg_ParseTuple(args, "OOKLii", &target, &sampler, &seed, &step, &B, &T)) return NULL;
    if (B < 1 || T < 1) return PyErr_Format(PyExc_ValueError, "batch size and length must be >= 1");
    data_spec s;
    PyObject *result = NULL;
    if (data_spec_parse(target, sampler, &s) == 0) {
        npy_intp shape[2] = {B, T};
        PyObject *x = PyArray_SimpleNew(2, shape, NPY_UINT8);
        PyObject *y = PyArray_SimpleNew(s.target.prefix ? 2 : 1, shape, NPY_FLOAT64);
        if (x && y) {
            sf_status st;
            Py_BEGIN_ALLOW_THREADS
            st = sf_sample_batch(&s.target, &s.sampler, seed, step, B, T, PyArray_DATA((PyArrayObject *)x),
                                 PyArray_DATA((PyArrayObject *)y));
            Py_END_ALLOW_THREADS
            if (st) sf_py_raise(st);
            else result = Py_BuildValue("(OO)", x, y);
        }
        Py_XDECREF(x);
        Py_XDECREF(y);
    }
    data_spec_release(&s);
    return result;
}

/* train(model, optimizer, target, sampler, loss, pm1, batch_size, seq_len, seed, threshold,
 *       first_step, n_steps, n_threads, record float64 (4, n_steps), done int64 (1,))
 * -> (status, message, pending_exception)
 * The loop writes each finished step's loss, accuracy, lr and gradient norm into `record` and
 * the count of finished steps into `done` as it goes, so the caller's bookkeeping survives an
 * interrupt at any moment. An interrupt or divergence returns normally; the caller re-raises. */
static PyObject *py_train(PyObject *self, PyObject *args) {
    PyObject *mo, *oo, *target, *sampler, *recordo, *doneo;
    int loss_kind, pm1, B, T, nt;
    unsigned long long seed;
    double threshold;
    long long first, n_steps;
    if (!PyArg_ParseTuple(args, "O!O!OOipiiKdLLiOO", &SfModelType, &mo, &SfOptimizerType, &oo, &target, &sampler,
                          &loss_kind, &pm1, &B, &T, &seed, &threshold, &first, &n_steps, &nt, &recordo, &doneo))
        return NULL;
    SfModelObject *model = (SfModelObject *)mo;
    SfOptimizerObject *opt = (SfOptimizerObject *)oo;
    if (sf_py_model_ready(model) < 0 || optimizer_ready(opt) < 0) return NULL;
    if (opt->owner != model) return PyErr_Format(PyExc_ValueError, "the optimizer belongs to another model");
    if (n_steps < 0 || first < 0) return PyErr_Format(PyExc_ValueError, "steps must be >= 0");
    PyArrayObject *record = sf_py_array(recordo, NPY_FLOAT64, 2, "record");
    PyArrayObject *done = record ? sf_py_array(doneo, NPY_INT64, 1, "done") : NULL;
    PyObject *result = NULL;
    data_spec s;
    if (!done) goto out_arrays;
    if (PyArray_DIM(record, 0) != 4 || PyArray_DIM(record, 1) < n_steps || PyArray_DIM(done, 0) != 1 ||
        !PyArray_ISWRITEABLE(record) || !PyArray_ISWRITEABLE(done)) {
        PyErr_SetString(PyExc_ValueError, "record must be writable (4, n_steps) and done writable (1,)");
        goto out_arrays;
    }
    if (data_spec_parse(target, sampler, &s) < 0) goto out_spec;
    if (sf_py_model_acquire_waiting(model) < 0) goto out_spec;
    sf_train_config tc = {loss_kind, pm1, B, T, seed, threshold};
    double *rec = PyArray_DATA(record);
    const npy_intp stride = PyArray_DIM(record, 1);
    sf_py_unlocked u;
    u.saved = PyEval_SaveThread();
    sf_status st = sf_train(model->model, opt->opt, &s.target, &s.sampler, &tc, first, n_steps, rec, rec + stride,
                            rec + 2 * stride, rec + 3 * stride, (int64_t *)PyArray_DATA(done), nt, sf_py_stop_hook, &u);
    PyEval_RestoreThread(u.saved);
    sf_py_model_release(model);
    if (st == SF_EINVAL || st == SF_ENOMEM) {
        sf_py_raise(st);
        goto out_spec;
    }
    PyObject *pending = Py_None;
    if (st == SF_EINTR && PyErr_Occurred()) { /* the exception raised by a signal handler */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb && value) PyException_SetTraceback(value, tb);
        Py_XDECREF(type);
        Py_XDECREF(tb);
        pending = value ? value : Py_None;
        if (!value) Py_INCREF(Py_None);
    } else {
        Py_INCREF(pending);
    }
    result = Py_BuildValue("(isN)", (int)st, st ? sf_last_error() : "", pending);
out_spec:
    data_spec_release(&s);
out_arrays:
    Py_XDECREF(record);
    Py_XDECREF(done);
    return result;
}

PyMethodDef sf_train_methods[] = {
    {"train", py_train, METH_VARARGS, "Run the C training loop (see py_train.c)."},
    {"target_eval", py_target_eval, METH_VARARGS, "target_eval((kind, n, table), x uint8 (B,T)) -> float64 (B,)"},
    {"sample_batch", py_sample_batch, METH_VARARGS,
     "sample_batch(target, sampler, seed, step, B, T) -> (x, y): batch `step` of the training stream"},
    {NULL, NULL, 0, NULL},
};
