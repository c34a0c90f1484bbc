/* sensiformer._engine.Optimizer and the training-loop functions (train, target_eval,
 * sample_batch). Argument checks here guard the engine; user-facing validation with friendly
 * messages lives in the Python layer. */
#include "py_util.h"

/* ---- Optimizer ------------------------------------------------------------------------------- */

/* Optimizer(*, model, kind, lr, beta1, beta2, eps, weight_decay, momentum, dampening, nesterov, decay_all,
 *           schedule, warmup_steps, total_steps, min_lr, clip_norm) */
static int parse_optim_config(PyObject *args, PyObject *kw, sf_optim_config *c, SfModelObject **model) {
    int kind, schedule;
    memset(c, 0, sizeof *c);
    const sf_py_arg table[] = {
        SF_ARG("model", SF_ARG_MODEL, model), SF_ARG("kind", SF_ARG_INT, &kind), SF_ARG("lr", SF_ARG_DOUBLE, &c->lr),
        SF_ARG("beta1", SF_ARG_DOUBLE, &c->beta1), SF_ARG("beta2", SF_ARG_DOUBLE, &c->beta2),
        SF_ARG("eps", SF_ARG_DOUBLE, &c->eps), SF_ARG("weight_decay", SF_ARG_DOUBLE, &c->weight_decay),
        SF_ARG("momentum", SF_ARG_DOUBLE, &c->momentum), SF_ARG("dampening", SF_ARG_DOUBLE, &c->dampening),
        SF_ARG("nesterov", SF_ARG_BOOL, &c->nesterov), SF_ARG("decay_all", SF_ARG_BOOL, &c->decay_norm_bias_embedding),
        SF_ARG("schedule", SF_ARG_INT, &schedule), SF_ARG("warmup_steps", SF_ARG_INT64, &c->warmup_steps),
        SF_ARG("total_steps", SF_ARG_INT64, &c->total_steps), SF_ARG("min_lr", SF_ARG_DOUBLE, &c->min_lr),
        SF_ARG("clip_norm", SF_ARG_DOUBLE, &c->clip_norm)};
    if (sf_py_parse("Optimizer", args, kw, SF_ARGS(table)) < 0) return -1;
    c->kind = kind, c->schedule = schedule;
    return 0;
}

static int optimizer_init(SfOptimizerObject *self, PyObject *args, PyObject *kw) {
    sf_optim_config c;
    SfModelObject *mo;
    if (parse_optim_config(args, kw, &c, &mo) < 0) return -1;
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

int sf_py_optimizer_ready(SfOptimizerObject *self) {
    if (!self->opt) {
        PyErr_SetString(PyExc_RuntimeError, "the engine optimizer was not initialised");
        return -1;
    }
    return 0;
}

struct step_call {
    sf_optimizer *opt;
    double norm;
    int n_threads;
};

static sf_status step_body(void *p, sf_stop_hook stop, void *stop_ctx) {
    struct step_call *c = p;
    return sf_optimizer_step(c->opt, &c->norm, c->n_threads);
}

/* step(*, n_threads) -> the gradient norm before clipping */
static PyObject *optimizer_step(SfOptimizerObject *self, PyObject *args, PyObject *kw) {
    struct step_call c = {0};
    const sf_py_arg table[] = {SF_ARG("n_threads", SF_ARG_INT, &c.n_threads)};
    if (sf_py_optimizer_ready(self) < 0 || sf_py_parse("step", args, kw, SF_ARGS(table)) < 0) return NULL;
    c.opt = self->opt;
    if (sf_py_run(self->owner, 0, step_body, &c) < 0) return NULL;
    return PyFloat_FromDouble(c.norm);
}

static PyObject *optimizer_state(SfOptimizerObject *self, PyObject *arg) {
    if (sf_py_optimizer_ready(self) < 0) return NULL;
    long which = PyLong_AsLong(arg);
    if (which == -1 && PyErr_Occurred()) return NULL;
    if (which != 0 && which != 1) return PyErr_Format(PyExc_ValueError, "state(0 | 1), got %ld", which);
    npy_intp n = (npy_intp)sf_model_num_params(self->owner->model);
    return sf_py_view((PyObject *)self, sf_optimizer_state(self->opt, (int)which), 1, &n,
                      sf_py_typenum(sf_model_config(self->owner->model)->dtype), 1);
}

static PyObject *optimizer_lr_at(SfOptimizerObject *self, PyObject *arg) {
    if (sf_py_optimizer_ready(self) < 0) return NULL;
    long long step = PyLong_AsLongLong(arg);
    if (step == -1 && PyErr_Occurred()) return NULL;
    return PyFloat_FromDouble(sf_optimizer_lr_at(self->opt, step));
}

static PyObject *optimizer_get_step(SfOptimizerObject *self, void *closure) {
    if (sf_py_optimizer_ready(self) < 0) return NULL;
    return PyLong_FromLongLong(sf_optimizer_step_count(self->opt));
}

static int optimizer_set_step(SfOptimizerObject *self, PyObject *value, void *closure) {
    if (sf_py_optimizer_ready(self) < 0) return -1;
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
    {"step", SF_PY_KEYWORDS(optimizer_step), "step(*, n_threads) -> gradient norm before clipping"},
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

struct target_call {
    const sf_target *target;
    const sf_sampler *sampler;
    const uint8_t *x_in;
    uint64_t seed;
    int64_t step;
    int B, T;
    uint8_t *x;
    double *y;
};

static sf_status target_eval_body(void *p, sf_stop_hook stop, void *stop_ctx) {
    struct target_call *c = p;
    return sf_target_eval(c->target, c->x_in, c->B, c->T, c->y);
}

/* target_eval(target (kind, n, table[, options]), x uint8 (B,T)) -> float64 (B,), or (B,T) for a prefix target */
static PyObject *py_target_eval(PyObject *self, PyObject *args, PyObject *kw) {
    PyObject *target;
    PyArrayObject *x;
    const sf_py_arg table[] = {SF_ARG("target", SF_ARG_OBJECT, &target), SF_ARRAY("x", &x, NPY_UINT8, 2)};
    if (sf_py_parse("target_eval", args, kw, SF_ARGS(table)) < 0) return NULL;
    data_spec s;
    PyObject *y = NULL;
    if (data_spec_parse(target, NULL, &s) == 0) {
        npy_intp shape[2] = {PyArray_DIM(x, 0), PyArray_DIM(x, 1)};
        if ((y = PyArray_SimpleNew(s.target.prefix ? 2 : 1, shape, NPY_FLOAT64))) {
            struct target_call c = {&s.target, NULL, PyArray_DATA(x), 0, 0, (int)shape[0], (int)shape[1], NULL,
                                    PyArray_DATA((PyArrayObject *)y)};
            if (sf_py_run(NULL, 0, target_eval_body, &c) < 0) Py_CLEAR(y);
        }
    }
    data_spec_release(&s);
    return y;
}

static sf_status sample_batch_body(void *p, sf_stop_hook stop, void *stop_ctx) {
    struct target_call *c = p;
    return sf_sample_batch(c->target, c->sampler, c->seed, c->step, c->B, c->T, c->x, c->y);
}

/* sample_batch(target, sampler (kind, subset, data_x, data_y), seed, step, batch_size, seq_len) -> (x, y):
 * batch `step` of the training stream */
static PyObject *py_sample_batch(PyObject *self, PyObject *args, PyObject *kw) {
    PyObject *target, *sampler;
    struct target_call c = {0};
    const sf_py_arg table[] = {SF_ARG("target", SF_ARG_OBJECT, &target), SF_ARG("sampler", SF_ARG_OBJECT, &sampler),
                               SF_ARG("seed", SF_ARG_UINT64, &c.seed), SF_ARG("step", SF_ARG_INT64, &c.step),
                               SF_ARG("batch_size", SF_ARG_INT, &c.B), SF_ARG("seq_len", SF_ARG_INT, &c.T)};
    if (sf_py_parse("sample_batch", args, kw, SF_ARGS(table)) < 0) return NULL;
    if (c.B < 1 || c.T < 1) return PyErr_Format(PyExc_ValueError, "batch_size and seq_len must be >= 1");
    data_spec s;
    PyObject *result = NULL;
    if (data_spec_parse(target, sampler, &s) == 0) {
        npy_intp shape[2] = {c.B, c.T};
        PyObject *x = PyArray_SimpleNew(2, shape, NPY_UINT8);
        PyObject *y = x ? PyArray_SimpleNew(s.target.prefix ? 2 : 1, shape, NPY_FLOAT64) : NULL;
        if (y) {
            c.target = &s.target, c.sampler = &s.sampler;
            c.x = PyArray_DATA((PyArrayObject *)x), c.y = PyArray_DATA((PyArrayObject *)y);
            if (sf_py_run(NULL, 0, sample_batch_body, &c) == 0) result = Py_BuildValue("(OO)", x, y);
        }
        Py_XDECREF(x);
        Py_XDECREF(y);
    }
    data_spec_release(&s);
    return result;
}

/* The exception a signal handler raised during training (with its traceback), taken out of the
 * error indicator to hand back to the caller; a new reference, None when there is none. */
static PyObject *pending_exception(void) {
    if (!PyErr_Occurred()) return Py_NewRef(Py_None);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value ? value : Py_NewRef(Py_None);
}

struct train_call {
    sf_model *model;
    sf_optimizer *opt;
    const data_spec *spec;
    sf_train_config config;
    int64_t first, n_steps;
    double *record;
    int64_t stride, *done;
    int n_threads;
};

static sf_status train_body(void *p, sf_stop_hook stop, void *stop_ctx) {
    struct train_call *c = p;
    double *r = c->record;
    return sf_train(c->model, c->opt, &c->spec->target, &c->spec->sampler, &c->config, c->first, c->n_steps, r,
                    r + c->stride, r + 2 * c->stride, r + 3 * c->stride, c->done, c->n_threads, stop, stop_ctx);
}

/* train(model, optimizer, target, sampler, loss, pm1, batch_size, seq_len, seed, threshold, first_step,
 *       n_steps, n_threads, record float64 (4, n_steps), done int64 (1,)) -> (status, message, pending_exception)
 * The loop writes each finished step's loss, accuracy, lr and gradient norm into `record` and
 * the count of finished steps into `done` as it goes, so the caller's bookkeeping survives an
 * interrupt at any moment. An interrupt or divergence returns normally; the caller re-raises. */
static PyObject *py_train(PyObject *self, PyObject *args, PyObject *kw) {
    SfModelObject *model;
    SfOptimizerObject *opt;
    PyObject *target, *sampler;
    PyArrayObject *record, *done;
    struct train_call c = {0};
    int loss;
    const sf_py_arg table[] = {
        SF_ARG("model", SF_ARG_MODEL, &model), SF_ARG("optimizer", SF_ARG_OPTIMIZER, &opt),
        SF_ARG("target", SF_ARG_OBJECT, &target), SF_ARG("sampler", SF_ARG_OBJECT, &sampler),
        SF_ARG("loss", SF_ARG_INT, &loss), SF_ARG("pm1", SF_ARG_BOOL, &c.config.pm1_labels),
        SF_ARG("batch_size", SF_ARG_INT, &c.config.batch_size), SF_ARG("seq_len", SF_ARG_INT, &c.config.seq_len),
        SF_ARG("seed", SF_ARG_UINT64, &c.config.seed), SF_ARG("threshold", SF_ARG_DOUBLE, &c.config.threshold),
        SF_ARG("first_step", SF_ARG_INT64, &c.first), SF_ARG("n_steps", SF_ARG_INT64, &c.n_steps),
        SF_ARG("n_threads", SF_ARG_INT, &c.n_threads), SF_ARRAY_OUT("record", &record, NPY_FLOAT64, 2),
        SF_ARRAY_OUT("done", &done, NPY_INT64, 1)};
    if (sf_py_parse("train", args, kw, SF_ARGS(table)) < 0) return NULL;
    c.config.loss = loss;
    if (opt->owner != model) return PyErr_Format(PyExc_ValueError, "the optimizer belongs to another model");
    if (c.n_steps < 0 || c.first < 0) return PyErr_Format(PyExc_ValueError, "steps must be >= 0");
    if (PyArray_DIM(record, 0) != 4 || PyArray_DIM(record, 1) < c.n_steps || PyArray_DIM(done, 0) != 1)
        return PyErr_Format(PyExc_ValueError, "record must be (4, n_steps) and done (1,)");
    data_spec s;
    PyObject *result = NULL;
    if (data_spec_parse(target, sampler, &s) == 0) {
        c.model = model->model, c.opt = opt->opt, c.spec = &s;
        c.record = PyArray_DATA(record), c.stride = PyArray_DIM(record, 1), c.done = PyArray_DATA(done);
        const int st = sf_py_run(model, SF_PY_WAIT | SF_PY_REPORT, train_body, &c);
        if (st >= 0) {
            PyObject *pending = pending_exception();
            result = Py_BuildValue("(isN)", st, st ? sf_last_error() : "", pending);
        }
    }
    data_spec_release(&s);
    return result;
}

PyMethodDef sf_train_methods[] = {
    {"train", SF_PY_KEYWORDS(py_train), "Run the C training loop (see py_train.c)."},
    {"target_eval", SF_PY_KEYWORDS(py_target_eval), "target_eval(*, target, x uint8 (B,T)) -> float64 (B,)"},
    {"sample_batch", SF_PY_KEYWORDS(py_sample_batch),
     "sample_batch(*, target, sampler, seed, step, batch_size, seq_len) -> (x, y): batch `step` of the training "
     "stream"},
    {NULL, NULL, 0, NULL},
};
