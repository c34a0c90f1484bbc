"""Hessian probes from exact Hessian-vector products (the engine's forward-over-reverse).

* ``hvp``: H v, laid out like ``model.flat`` (or restricted to a block).
* ``hessian_matrix``: the dense Hessian of a (small) block.
* ``hessian_eigenvalues``: extreme eigenpairs by Lanczos with full reorthogonalisation, with
  residuals and iteration counts.
* ``hessian_trace``: Hutchinson's estimator with Rademacher probes and a standard error.
* ``hessian_density``: the spectral density by stochastic Lanczos quadrature.

H is the Hessian of the mean loss over the rows of ``x`` (split into ``batch_size`` batches,
whose Hessians are averaged; equal batches give the same H as one big batch). Except for
``hvp`` without a block, the probes act on ``block_indices(model, block=block, exclude=exclude)``: by default
every parameter except the positional embeddings, the set ``probes.sharpness`` perturbs, so
that ``sharpness ~ sigma^2 / 2 * hessian_trace``. Vectors and eigenvalues are float64.

For a ``Seq2SeqTransformer`` y are label sequences (rows, n) and H is the Hessian of the
teacher-forced loss (decoder input [SOS, y], as ``probes.sharpness``, or ``decoder_input``:
e.g. ``teacher_forcing(bits)`` for a model trained on ±1 labels).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from . import _native
from ._validation import (as_finite_array, check_choice, check_float, check_int, check_memory, check_seed,
                          resolve_threads)
from .blocks import block_indices
from .estimate import Estimate
from ._vocabulary import LOSSES

if TYPE_CHECKING:
    from ._typing import ArrayLike, BlockSpec, EngineModel, Exclude

_CHUNK_BYTES = 1 << 28  # directions per engine call are limited to this much memory
_PROBE_BLOCK = 16  # Rademacher probes are drawn in fixed blocks keyed by (seed, block): chunking never changes them
_TRACE_CHUNK = 8  # Hutchinson probes per engine call: one forward serves 8 tangent passes, memory stays flat


def _rademacher(seed, first, count, n):
    """Probes ``first .. first + count - 1`` of the seed's Rademacher stream, as (count, n) float64 +-1."""
    out = np.empty((count, n))
    for block in range(first // _PROBE_BLOCK, (first + count - 1) // _PROBE_BLOCK + 1):
        lo, hi = max(first, block * _PROBE_BLOCK), min(first + count, (block + 1) * _PROBE_BLOCK)
        bits = np.random.default_rng([seed, block]).integers(0, 2, size=(_PROBE_BLOCK, n), dtype=np.int8)
        out[lo - first:hi - first] = bits[lo - block * _PROBE_BLOCK:hi - block * _PROBE_BLOCK] * 2.0 - 1.0
    return out


class HessianOperator:
    """The (block of the) Hessian at the model's current parameters as a linear operator.

    ``matvec(V)`` maps (k, n) or (n,) float64 arrays in block coordinates to H V; every call
    is one engine call per chunk of directions (one forward per batch, then a tangent pass per
    direction). ``n_hvp`` counts the products taken.
    """

    def __init__(self, model: EngineModel, x: ArrayLike, y: ArrayLike, *, block: BlockSpec = None,
                 exclude: Exclude = ("positional",), loss: str = "mse", batch_size: int | None = None,
                 n_threads: int | None = None, full: bool = False, decoder_input: ArrayLike | None = None) -> None:
        check_choice(loss, "loss", tuple(LOSSES))
        model.require_finite("the Hessian probes")
        self.model = model
        # a Seq2SeqTransformer: y are label sequences and the loss is teacher-forced (decoder_input,
        # default [SOS, y]); self.dec is None for the encoder
        self.x, self.y, self.batch_size, self.dec = model._probe_batches(x, y, batch_size, decoder_input)
        if loss == "bce" and not np.all((self.y >= 0) & (self.y <= 1)):
            raise ValueError("loss='bce' needs labels in [0, 1]")
        self.loss_code = LOSSES[loss]
        self.n_threads = resolve_threads(n_threads)
        self.index = (np.arange(model.num_parameters, dtype=np.int64) if full
                      else block_indices(model, block=block, exclude=exclude))
        self.n = int(self.index.size)
        self.n_hvp = 0
        self.loss = float("nan")

    def full_products(self, V: ArrayLike) -> np.ndarray:
        """H V for (k, num_parameters) directions in the model dtype (no block restriction)."""
        P = self.model.num_parameters
        rows = max(1, _CHUNK_BYTES // (P * self.model.dtype.itemsize))
        out = []
        for start in range(0, V.shape[0], rows):
            hv, self.loss = _native.hvp(model=self.model._engine, x=self.x, y=self.y, decoder_input=self.dec,
                                        batch_size=self.batch_size, loss=self.loss_code,
                                        v=np.ascontiguousarray(V[start:start + rows], dtype=self.model.dtype),
                                        n_threads=self.n_threads)
            out.append(hv)
        self.n_hvp += V.shape[0]
        return np.concatenate(out) if len(out) > 1 else out[0]

    def matvec(self, V: ArrayLike) -> np.ndarray:
        V = np.asarray(V, dtype=np.float64)
        single = V.ndim == 1
        V = V[None, :] if single else V
        full = np.zeros((V.shape[0], self.model.num_parameters), dtype=self.model.dtype)
        full[:, self.index] = V
        HV = self.full_products(full)[:, self.index].astype(np.float64)
        return HV[0] if single else HV

    def to_full(self, V: ArrayLike) -> np.ndarray:
        """Block-coordinate vectors (k, n) as (k, num_parameters) float64, zero outside the block."""
        V = np.atleast_2d(np.asarray(V, dtype=np.float64))
        full = np.zeros((V.shape[0], self.model.num_parameters))
        full[:, self.index] = V
        return full


def hvp(model: EngineModel, x: ArrayLike, y: ArrayLike, v: ArrayLike | Mapping[str, ArrayLike], *, loss: str = "mse",
        block: BlockSpec = None, exclude: Exclude = ("positional",), batch_size: int | None = None,
        n_threads: int | None = None,
        decoder_input: ArrayLike | None = None) -> np.ndarray | OrderedDict[str, np.ndarray]:
    """Exact Hessian-vector product(s) H v of the mean loss, by forward-over-reverse.

    Parameters
    ----------
    model : Transformer
    x, y : arrays
        Inputs (rows, length) and labels (rows,) on the scale the model was trained on.
    v : array (num_parameters,) or (k, num_parameters), or dict of arrays
        Directions laid out like ``model.flat`` (k = 0 gives an empty result). With a ``block``,
        v may instead have the block's size (``len(block_indices(model, block=block, exclude=exclude))``) and
        the result then does too. A dict keyed like ``parameters()`` (e.g. the gradients that
        ``loss_and_grad`` returns) is one direction, and the result is such a dict too.
    loss : {"mse", "bce"}
    block : optional
        Restrict to a block (see ``sensiformer.blocks``): the result is H_BB v_B, the block's
        sub-Hessian times v restricted to the block (zero outside it in the full layout).
        Without a block, the full H v over every parameter (``exclude`` is then unused).
    batch_size : int, optional
        Split the rows into batches of this size; H is the mean of their Hessians.
    decoder_input : array (rows, S), optional
        A ``Seq2SeqTransformer``'s decoder tokens (default: teacher forcing [SOS, y], which needs
        0/1 labels; give ``teacher_forcing(bits)`` for a model trained on ±1 labels).

    Returns
    -------
    numpy.ndarray or dict
        H v in the model dtype, shaped like v (a dict for a dict).
    """
    op = HessianOperator(model, x, y, block=block, exclude=exclude, loss=loss, batch_size=batch_size, n_threads=n_threads, full=block is None,
                         decoder_input=decoder_input)
    if isinstance(v, Mapping):
        return _as_tensor_dict(model, hvp(model, x, y, _flat_from_tensor_dict(model, v), loss=loss, block=block,
                                          exclude=exclude, batch_size=batch_size, n_threads=n_threads,
                                          decoder_input=decoder_input))
    v = as_finite_array(v, "v", model.dtype)
    single = v.ndim == 1
    V = v[None, :] if single else v
    if V.ndim != 2 or V.shape[1] not in (model.num_parameters, op.n):
        raise ValueError(f"v must have shape (num_parameters,) = ({model.num_parameters},) or (k, num_parameters)"
                         + (f", or the block's size {op.n}" if block is not None else "") + f"; got {v.shape}")
    if V.shape[0] == 0:  # no directions: no products (the engine needs at least one)
        return np.zeros(V.shape, dtype=model.dtype)
    compact = block is not None and V.shape[1] == op.n and op.n != model.num_parameters
    if block is None:
        HV = op.full_products(np.ascontiguousarray(V, dtype=model.dtype))
    else:
        Vb = V if compact else V[:, op.index]
        HVb = op.matvec(Vb).astype(model.dtype)
        HV = HVb if compact else np.zeros((V.shape[0], model.num_parameters), dtype=model.dtype)
        if not compact:
            HV[:, op.index] = HVb
    return HV[0] if single else HV


def _flat_from_tensor_dict(model, v):
    """A direction given as a dict keyed like ``parameters()`` (e.g. ``loss_and_grad``'s gradients),
    laid out like ``model.flat``."""
    shapes = {name: p.shape for name, p in model.parameters().items()}
    missing, unknown = [k for k in shapes if k not in v], [k for k in v if k not in shapes]
    if missing or unknown:
        raise ValueError(f"v as a dict must have exactly the keys of model.parameters(); missing {missing}, "
                         f"unexpected {unknown}")
    flat = np.empty(model.num_parameters, dtype=model.dtype)
    for t in model.tensor_info:
        name = t["name"]
        flat[t["offset"]:t["offset"] + t["size"]] = as_finite_array(v[name], f"v[{name!r}]", model.dtype,
                                                                     shapes[name]).reshape(-1)
    return flat


def _as_tensor_dict(model, flat):
    """A flat vector laid out like ``model.flat`` as a dict of arrays keyed like ``parameters()``."""
    return OrderedDict((t["name"], flat[t["offset"]:t["offset"] + t["size"]].reshape(t["shape"]))
                       for t in model.tensor_info)


def hessian_matrix(model: EngineModel, x: ArrayLike, y: ArrayLike, *, block: BlockSpec = None,
                   exclude: Exclude = ("positional",), loss: str = "mse", batch_size: int | None = None,
                   n_threads: int | None = None, max_size: int = 8192,
                   decoder_input: ArrayLike | None = None) -> np.ndarray:
    """The dense Hessian of a block (n x n float64, rows and columns in ``block_indices`` order),
    from n exact HVPs with unit vectors: for tiny models, exact traces, diagonals and spectra.

    ``max_size`` guards against accidentally asking for a huge matrix (n^2 values).
    """
    max_size = check_int(max_size, "max_size", 1)
    op = HessianOperator(model, x, y, block=block, exclude=exclude, loss=loss, batch_size=batch_size, n_threads=n_threads, decoder_input=decoder_input)
    if op.n > max_size:
        raise ValueError(f"the block has {op.n} parameters, more than max_size={max_size}; "
                         "use hessian_eigenvalues / hessian_trace / hessian_density instead")
    H = op.matvec(np.eye(op.n))
    return 0.5 * (H + H.T)  # symmetric up to rounding; symmetrise so eigvalsh sees one matrix


# ---- Lanczos -----------------------------------------------------------------------------------

class _Lanczos:
    """Lanczos with full reorthogonalisation on ``g`` independent starts in lockstep (one engine
    call per iteration for all of them). A start whose Krylov space is exhausted (beta ~ 0)
    stops; with ``restart=True`` it continues from a fresh random vector orthogonal to its basis
    (beta = 0 decouples the tridiagonal matrix), which recovers repeated eigenvalues."""

    def __init__(self, op, starts, capacity, rng=None):
        self.op = op
        g, n = starts.shape
        self.limit = min(capacity, n)  # at most this many steps
        self.Q = np.empty((g, min(self.limit, 32) + 1, n))  # grown by doubling as steps are taken
        self.Q[:, 0] = starts / np.linalg.norm(starts, axis=1, keepdims=True)
        self.alpha = np.zeros((g, self.limit))
        self.beta = np.zeros((g, self.limit))
        self.steps = 0
        self.length = np.zeros(g, dtype=np.int64)  # steps taken while active
        self.active = np.ones(g, dtype=bool)
        self.rng = rng

    def _reserve(self, rows):
        if rows > self.Q.shape[1]:
            grown = np.empty((self.Q.shape[0], min(max(rows, 2 * self.Q.shape[1]), self.limit + 1), self.Q.shape[2]))
            grown[:, :self.Q.shape[1]] = self.Q
            self.Q = grown

    def step(self, restart=False):
        j = self.steps
        self._reserve(j + 2)
        Q = self.Q
        self.length[self.active] += 1
        q = Q[:, j]
        w = self.op.matvec(q)
        a = np.einsum("gn,gn->g", q, w)
        w -= a[:, None] * q
        if j > 0:
            w -= self.beta[:, j - 1, None] * Q[:, j - 1]
        for _ in range(2):  # twice is enough (Parlett's "twice is enough")
            w -= np.einsum("gj,gjn->gn", np.einsum("gjn,gn->gj", Q[:, :j + 1], w), Q[:, :j + 1])
        b = np.linalg.norm(w, axis=1)
        self.alpha[:, j] = np.where(self.active, a, 0.0)
        scale = np.maximum(np.abs(self.alpha[:, :j + 1]).max(axis=1), np.abs(self.beta[:, :j + 1]).max(axis=1))
        broke = b <= 1e-10 * np.maximum(scale, 1e-300)
        self.steps = j + 1
        if j + 1 >= Q.shape[2]:  # a full basis: the tridiagonal matrix is exact
            self.beta[:, j] = b
            return b
        for i in np.flatnonzero(broke):
            if restart and self.active[i]:
                r = self.rng.standard_normal(Q.shape[2])
                for _ in range(2):
                    r -= Q[i, :j + 1].T @ (Q[i, :j + 1] @ r)
                w[i], b[i] = r, 0.0
                Q[i, j + 1] = r / np.linalg.norm(r)
            else:
                self.active[i] = False
                w[i], b[i] = 0.0, 0.0
                Q[i, j + 1] = 0.0
        self.beta[:, j] = b
        ok = ~broke
        Q[ok, j + 1] = w[ok] / b[ok, None]
        return np.where(broke & restart, 0.0, b)

    def ritz(self, i):
        """Ritz values, eigenvectors of T (columns) and the last beta of start i."""
        m = self.steps
        T = np.diag(self.alpha[i, :m]) + np.diag(self.beta[i, :m - 1], 1) + np.diag(self.beta[i, :m - 1], -1)
        theta, S = np.linalg.eigh(T)
        return theta, S, self.beta[i, m - 1]


@dataclass(frozen=True)
class HessianEigen:
    """Extreme eigenpairs of (a block of) the Hessian.

    Attributes
    ----------
    values : numpy.ndarray
        Eigenvalues in decreasing order (for ``which="both"``: the k largest and the k
        smallest together).
    vectors : numpy.ndarray
        Unit eigenvectors, one row per value, laid out like ``model.flat`` (zero outside the
        block).
    residuals : numpy.ndarray
        ``||H u - lambda u||`` computed with fresh HVPs: the honest convergence check.
    ritz_residuals : numpy.ndarray
        Lanczos' own estimates ``beta_m |s_m|`` that drove the stopping rule.
    converged : numpy.ndarray
        Per value, ``ritz_residual <= tol * max |lambda|``.
    iterations : int
        Lanczos steps taken (one HVP each).
    n_hvp : int
        HVPs in total, including the residual checks.
    block : numpy.ndarray
        Flat indices of the parameters the Hessian was restricted to.
    """

    values: np.ndarray
    vectors: np.ndarray = field(repr=False)
    residuals: np.ndarray
    ritz_residuals: np.ndarray
    converged: np.ndarray
    iterations: int
    n_hvp: int
    block: np.ndarray = field(repr=False)


def _wanted(theta, k, which):
    """Indices of the wanted Ritz values, in decreasing order of value."""
    order = np.argsort(theta)
    top, bottom = order[::-1][:k], order[:k]
    chosen = {"largest": top, "smallest": bottom, "both": np.union1d(top, bottom)}[which]
    return chosen[np.argsort(-theta[chosen], kind="stable")]


def hessian_eigenvalues(model: EngineModel, x: ArrayLike, y: ArrayLike, *, k: int = 1, which: str = "largest",
                        block: BlockSpec = None, exclude: Exclude = ("positional",), tol: float | None = None,
                        max_iter: int = 200, seed: int = 0, loss: str = "mse", batch_size: int | None = None,
                        n_threads: int | None = None, decoder_input: ArrayLike | None = None) -> HessianEigen:
    """Extreme eigenvalues and eigenvectors of the Hessian by Lanczos.

    Lanczos with full reorthogonalisation (memory: iterations x block size float64 values)
    from a seeded random start; it stops when the wanted Ritz pairs have residual estimates
    ``<= tol * max |lambda|``, after ``max_iter`` steps, or when the Krylov space is the whole
    block (then the values are exact up to rounding). Negative curvature is found as well
    (``which="smallest"``). Repeated eigenvalues are found as often as the Krylov space
    resolves them; an exhausted space restarts from a fresh orthogonal vector.

    Parameters
    ----------
    model, x, y, loss, batch_size, n_threads, decoder_input : as ``hvp``
    k : int
        Number of eigenvalues (per end for ``which="both"``).
    which : {"largest", "smallest", "both"}
        Algebraically largest, smallest, or both ends.
    block, exclude : see ``sensiformer.blocks`` (default: all but positional embeddings).
    tol : float, optional
        Relative residual tolerance; default 1e-6 for float64 models and 1e-4 for float32
        ones (whose HVPs carry ~1e-7 relative rounding).
    max_iter : int
    seed : int
        Seed of the start vector.

    Returns
    -------
    HessianEigen
    """
    check_choice(which, "which", ("largest", "smallest", "both"))
    k = check_int(k, "k", 1)
    tol = (1e-6 if model.dtype == np.float64 else 1e-4) if tol is None else check_float(tol, "tol", 0.0)
    max_iter = check_int(max_iter, "max_iter", 1)
    rng = np.random.default_rng(check_seed(seed))
    op = HessianOperator(model, x, y, block=block, exclude=exclude, loss=loss, batch_size=batch_size, n_threads=n_threads, decoder_input=decoder_input)
    need = k if which != "both" else 2 * k
    if need > op.n:
        raise ValueError(f"k={k} asks for {need} eigenvalues of a Hessian of size {op.n} (the parameters in the "
                         f"block); k must be <= {op.n if which != 'both' else op.n // 2}")
    if need > max_iter:
        raise ValueError(f"k={k} needs at least {need} Lanczos steps, but max_iter={max_iter}")
    lz = _Lanczos(op, rng.standard_normal((1, op.n)), min(max_iter, op.n), rng)
    while True:
        lz.step(restart=lz.steps < need)
        theta, S, b = lz.ritz(0)
        sel = _wanted(theta, min(k, theta.size), which)
        ritz_res = np.abs(b * S[-1, sel])
        scale = max(np.abs(theta).max(), np.finfo(float).tiny)
        done = lz.steps >= need and np.all(ritz_res <= tol * scale)
        if done or lz.steps >= min(max_iter, op.n) or not lz.active[0]:
            break
    values = theta[sel]
    U = (lz.Q[0, :lz.steps].T @ S[:, sel]).T  # (len, n) in block coordinates
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    residuals = np.linalg.norm(op.matvec(U) - values[:, None] * U, axis=1)
    return HessianEigen(values=values, vectors=op.to_full(U), residuals=residuals, ritz_residuals=ritz_res,
                        converged=ritz_res <= tol * scale, iterations=lz.steps, n_hvp=op.n_hvp, block=op.index)


# ---- trace ---------------------------------------------------------------------------------------

def hessian_trace(model: EngineModel, x: ArrayLike, y: ArrayLike, *, samples: int = 100, seed: int = 0,
                  block: BlockSpec = None, exclude: Exclude = ("positional",), loss: str = "mse",
                  batch_size: int | None = None, n_threads: int | None = None,
                  decoder_input: ArrayLike | None = None) -> Estimate:
    """Hutchinson's estimate of the Hessian trace: the mean of z^T H z over Rademacher z.

    Each draw is unbiased and the draws are independent, so the reported standard error
    (sample std / sqrt(samples)) is calibrated. The draws for a seed are fixed (common random
    numbers across calls); they are drawn and multiplied a few at a time, so memory does not
    grow with ``samples``.

    Returns
    -------
    Estimate
        The trace, its standard error, and the per-draw values z^T H z in ``samples``.
    """
    samples = check_int(samples, "samples", 1, 1 << 24)
    seed = check_seed(seed)
    op = HessianOperator(model, x, y, block=block, exclude=exclude, loss=loss, batch_size=batch_size, n_threads=n_threads, decoder_input=decoder_input)
    values = np.empty(samples)
    for first in range(0, samples, _TRACE_CHUNK):
        Z = _rademacher(seed, first, min(_TRACE_CHUNK, samples - first), op.n)
        values[first:first + len(Z)] = np.einsum("sn,sn->s", Z, op.matvec(Z))
    return Estimate.from_samples(values)


# ---- spectral density ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature of the Hessian's eigenvalue density.

    Attributes
    ----------
    nodes, weights : numpy.ndarray (probes, steps)
        Per probe, the Ritz values and quadrature weights (squared first components of T's
        eigenvectors; each row sums to 1). A probe whose Krylov space was exhausted early has
        zero weights in its unused columns.
    grid, density : numpy.ndarray
        The density smoothed with a Gaussian of width ``sigma`` on a grid; it integrates to 1
        (the spectral measure divided by the block size).
    sigma : float
    trace : Estimate
        n * sum(weights * nodes) per probe: equal to z^T H z of the probe (the quadrature is
        exact for polynomials of degree < 2 steps), i.e. a Hutchinson trace estimate.
    n : int
        Block size (number of eigenvalues).
    """

    nodes: np.ndarray
    weights: np.ndarray
    grid: np.ndarray
    density: np.ndarray
    sigma: float
    trace: Estimate
    n: int

    def moment(self, p: int) -> Estimate:
        """The p-th spectral moment, tr(H^p) / n, with its standard error over probes."""
        return Estimate.from_samples((self.weights * self.nodes ** p).sum(axis=1))


def hessian_density(model: EngineModel, x: ArrayLike, y: ArrayLike, *, probes: int = 10, steps: int = 50, seed: int = 0,
                    block: BlockSpec = None, exclude: Exclude = ("positional",), grid_points: int = 1000,
                    sigma: float | None = None, loss: str = "mse", batch_size: int | None = None,
                    n_threads: int | None = None, decoder_input: ArrayLike | None = None) -> SpectralDensity:
    """Spectral density of the Hessian by stochastic Lanczos quadrature (as PyHessian's ``density``).

    Every probe (a normalised Rademacher vector; probe i is draw i of ``hessian_trace`` with
    the same seed) runs ``steps`` Lanczos iterations with full reorthogonalisation. Probes
    advance together, one engine call per iteration, in groups that keep the Lanczos bases
    (steps x block size float64 values per probe) within about 256 MB.

    Parameters
    ----------
    probes : int
        Number of random probes.
    steps : int
        Lanczos steps per probe (quadrature nodes).
    grid_points : int
        Points of the smoothed density's grid (spanning the nodes with a margin).
    sigma : float, optional
        Width of the Gaussian smoothing; default 1% of the node range.

    Returns
    -------
    SpectralDensity
    """
    probes = check_int(probes, "probes", 1)
    steps = check_int(steps, "steps", 1)
    grid_points = check_int(grid_points, "grid_points", 2)
    seed = check_seed(seed)
    op = HessianOperator(model, x, y, block=block, exclude=exclude, loss=loss, batch_size=batch_size, n_threads=n_threads, decoder_input=decoder_input)
    steps = min(steps, op.n)
    group = max(1, _CHUNK_BYTES // ((steps + 1) * op.n * 8))  # probes advancing together, by memory
    check_memory(min(group, probes) * (steps + 1) * op.n * 8, "hessian_density's Lanczos bases")
    nodes = np.zeros((probes, steps))
    weights = np.zeros((probes, steps))
    for first in range(0, probes, group):
        starts = _rademacher(seed, first, min(group, probes - first), op.n)  # hessian_trace's draws
        lz = _Lanczos(op, starts, steps)
        for _ in range(steps):
            lz.step()
            if not lz.active.any():
                break
        for i in range(lz.Q.shape[0]):
            m = int(lz.length[i])
            T = np.diag(lz.alpha[i, :m]) + np.diag(lz.beta[i, :m - 1], 1) + np.diag(lz.beta[i, :m - 1], -1)
            theta, S = np.linalg.eigh(T)
            nodes[first + i, :m], weights[first + i, :m] = theta, S[0] ** 2
    used = weights > 0
    lo, hi = nodes[used].min(), nodes[used].max()
    width = hi - lo
    if sigma is None:
        sigma = 0.01 * width if width > 0 else max(1e-3 * abs(hi), 1e-12)
    sigma = check_float(sigma, "sigma", 0.0)
    if sigma <= 0:
        raise ValueError("sigma must be > 0")
    pad = 0.1 * width + 5 * sigma
    grid = np.linspace(lo - pad, hi + pad, grid_points)
    kernel = np.exp(-0.5 * ((grid[:, None] - nodes[used][None, :]) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    density = kernel @ weights[used] / probes
    trace = Estimate.from_samples(op.n * (weights * nodes).sum(axis=1))
    return SpectralDensity(nodes=nodes, weights=weights, grid=grid, density=density, sigma=float(sigma), trace=trace,
                           n=op.n)
