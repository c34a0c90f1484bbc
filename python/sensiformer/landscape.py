"""Loss landscapes around the current parameters: worst-case (SAM-style) sharpness and 1D/2D
slices (Li et al. 2018).

Every function evaluates the loss at theta + delta on a private copy of the model, so the
model's own parameters and gradient buffer are never perturbed, not even for a moment (another
thread using the model meanwhile sees it unchanged), and nothing needs restoring after an error
or an interruption. Points are formed in float64 and rounded once to the model dtype, so
``model.flat = (theta + a d).astype(dtype)`` followed by ``model.loss`` reproduces a slice value
exactly. A ``Seq2SeqTransformer`` takes label sequences and, optionally, its ``decoder_input``
(default the teacher forcing [SOS, y]; give ``teacher_forcing(bits)`` for ±1 labels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ._validation import as_tokens, as_values, check_choice, check_float, check_int, check_seed
from .blocks import block_indices
from .hessian import hessian_eigenvalues
from ._vocabulary import LOSSES

if TYPE_CHECKING:
    from ._typing import ArrayLike, BlockSpec, EngineModel, Exclude, Sequence


def _private_copy(model):
    """``(work, theta)``: a copy of the model to perturb, and its parameters."""
    model.require_finite("the landscape probes")
    work = model.copy()
    return work, work.flat.copy()  # theta from the same snapshot as the copy


def _data(model, x, y, loss, decoder_input=None):
    """(x, y, extra): ``extra`` holds what every loss call needs besides x and y (a
    Seq2SeqTransformer's decoder input: ``decoder_input``, default the teacher forcing [SOS, y])."""
    check_choice(loss, "loss", tuple(LOSSES))
    if hasattr(model, "teacher_forcing"):  # a Seq2SeqTransformer: label sequences, teacher-forced loss
        x, dec, y = model._loss_data(x, y, decoder_input)
        return x, y, dict(decoder_input=dec)
    if decoder_input is not None:
        raise TypeError("decoder_input is for a Seq2SeqTransformer")
    x = as_tokens(x, "x", model.n_positions)
    return x, as_values(y, "y", x.shape[0], model.dtype), {}


def _loss_at(work, theta, delta, x, y, loss, n_threads, grad=False, extra=None):
    """The loss (and gradient) at theta + delta, evaluated on the private copy ``work``."""
    work.flat[...] = theta.astype(np.float64) + delta
    if grad:
        value, _ = work.loss_and_grad(x, y, loss=loss, n_threads=n_threads, **(extra or {}))
        return value, work.flat_grad.astype(np.float64)
    return work.loss(x, y, loss=loss, n_threads=n_threads, **(extra or {}))


# ---- worst-case sharpness ------------------------------------------------------------------------

@dataclass(frozen=True)
class WorstCaseSharpness:
    """Result of ``worst_case_sharpness``.

    Attributes
    ----------
    value : float
        max over restarts and steps of L(theta + delta) - L(theta) (a lower bound on the true
        maximum over the ball).
    delta : numpy.ndarray
        The maximising perturbation, laid out like ``model.flat`` (float64).
    per_restart : numpy.ndarray
        Best loss increase of each restart.
    history : numpy.ndarray (restarts, steps + 1)
        Loss increase at every iterate.
    base_loss : float
    grad_norm : float
        Norm of the (scaled) gradient at theta on the block: rho * grad_norm is the first-order
        worst case.
    rho : float
    norm : str
    """

    value: float
    delta: np.ndarray = field(repr=False)
    per_restart: np.ndarray
    history: np.ndarray = field(repr=False)
    base_loss: float
    grad_norm: float
    rho: float
    norm: str


def _project(u, rho):
    n = np.linalg.norm(u)
    return u if n <= rho else u * (rho / n)


def worst_case_sharpness(model: EngineModel, x: ArrayLike, y: ArrayLike, rho: float, *, norm: str = "l2", steps: int = 20,
                         restarts: int = 3, seed: int = 0, step_size: float | None = None, eta: float = 0.0,
                         block: BlockSpec = None, exclude: Exclude = ("positional",), loss: str = "mse",
                         n_threads: int | None = None, decoder_input: ArrayLike | None = None) -> WorstCaseSharpness:
    """Worst-case sharpness max_{||delta|| <= rho} L(theta + delta) - L(theta) by projected
    gradient ascent with restarts (as SAM's inner problem, but run to convergence and reported).

    The ascent runs on u with delta = s * u (elementwise) and ||u||_2 <= rho: s = 1 for
    ``norm="l2"``; s = |theta| + eta for ``norm="adaptive"`` (ASAM's elementwise scaling, so the
    radius is relative to each weight's magnitude). Each step moves u by ``step_size`` along the
    normalised gradient and projects back on the ball; a step that does not increase the loss is
    undone and the step size halved. Restart 0 starts at the first-order solution
    rho * s*g / ||s*g|| (SAM's point), the others at random points on the sphere.

    Parameters
    ----------
    rho : float
        Radius.
    norm : {"l2", "adaptive"}
    steps : int
        Gradient evaluations per restart.
    restarts : int
    seed : int
        Seed of the random starts.
    step_size : float, optional
        Initial step length in u (default rho / 2).
    eta : float
        Offset of the adaptive scaling.
    block, exclude : see ``sensiformer.blocks`` (default: all but positional embeddings).

    Returns
    -------
    WorstCaseSharpness
    """
    check_choice(norm, "norm", ("l2", "adaptive"))
    rho = check_float(rho, "rho", 0.0)
    steps = check_int(steps, "steps", 1)
    restarts = check_int(restarts, "restarts", 1)
    eta = check_float(eta, "eta", 0.0)
    step = rho / 2 if step_size is None else check_float(step_size, "step_size", 0.0)
    rng = np.random.default_rng(check_seed(seed))
    x, y, extra = _data(model, x, y, loss, decoder_input)
    idx = block_indices(model, block=block, exclude=exclude)
    work, theta = _private_copy(model)
    s = np.ones(idx.size) if norm == "l2" else np.abs(theta[idx].astype(np.float64)) + eta
    full = np.zeros(model.num_parameters)

    def f(u, grad=True):
        full[idx] = s * u
        out = _loss_at(work, theta, full, x, y, loss, n_threads, grad, extra)
        return (out[0], s * out[1][idx]) if grad else (out, None)

    base, g0 = f(np.zeros(idx.size))
    grad_norm = float(np.linalg.norm(g0))
    history = np.full((restarts, steps + 1), -np.inf)
    best_value, best_u = 0.0, np.zeros(idx.size)
    for r in range(restarts):
        if r == 0 and grad_norm > 0:
            u = rho * g0 / grad_norm
        else:
            u = rng.standard_normal(idx.size)
            u *= rho / np.linalg.norm(u)
        alpha = step
        keep_u, keep_f, keep_g = None, -np.inf, None
        for t in range(steps + 1):
            value, g = f(u, grad=t < steps)
            history[r, t] = value - base
            if value > keep_f:
                keep_u, keep_f, keep_g = u, value, g
            else:
                alpha *= 0.5
            if t == steps or keep_g is None:
                break
            gn = np.linalg.norm(keep_g)
            if gn == 0 or alpha == 0:
                history[r, t + 1:] = history[r, t]
                break
            u = _project(keep_u + alpha * keep_g / gn, rho)
        if keep_f - base > best_value or r == 0:
            best_value, best_u = keep_f - base, keep_u
    full[:] = 0
    full[idx] = s * best_u
    per_restart = history.max(axis=1)
    return WorstCaseSharpness(value=float(per_restart.max()), delta=full.copy(), per_restart=per_restart,
                              history=history, base_loss=float(base), grad_norm=grad_norm, rho=rho, norm=norm)


# ---- slices ----------------------------------------------------------------------------------------

def random_direction(model: EngineModel, *, seed: int = 0, normalization: str | None = "filter",
                     ignore: str | None = "biasbn", exclude: Exclude = ("positional",),
                     block: BlockSpec = None) -> np.ndarray:
    """A random Gaussian direction scaled like the parameters (Li et al. 2018, loss-landscape's
    ``net_plotter``), laid out like ``model.flat`` (float64).

    ``normalization="filter"`` rescales every row (output unit) of a weight matrix to the norm
    of the same row of the parameters; ``"layer"`` every tensor as a whole; ``None`` leaves the
    raw Gaussian. One-dimensional tensors (biases, LayerNorm parameters) are zeroed with
    ``ignore="biasbn"`` or, with ``ignore=None``, set to the parameters themselves, as the
    reference code does. Entries outside the block (and excluded tensors) are zero.
    """
    if normalization not in ("filter", "layer", None):
        raise ValueError(f"normalization must be 'filter', 'layer' or None; got {normalization!r}")
    if ignore not in ("biasbn", None):
        raise ValueError(f"ignore must be 'biasbn' or None; got {ignore!r}")
    rng = np.random.default_rng(check_seed(seed))
    d = rng.standard_normal(model.num_parameters)
    theta = model.flat_snapshot().astype(np.float64)
    for t in model.tensor_info:
        sl = slice(t["offset"], t["offset"] + t["size"])
        if len(t["shape"]) == 1:
            d[sl] = 0.0 if ignore == "biasbn" else theta[sl]
            continue
        rows_d, rows_w = d[sl].reshape(t["shape"]), theta[sl].reshape(t["shape"])
        if normalization == "filter":
            rows_d *= (np.linalg.norm(rows_w, axis=1) / (np.linalg.norm(rows_d, axis=1) + 1e-10))[:, None]
        elif normalization == "layer":
            rows_d *= np.linalg.norm(rows_w) / (np.linalg.norm(rows_d) + 1e-10)
    keep = np.zeros(model.num_parameters, dtype=bool)
    keep[block_indices(model, block=block, exclude=exclude)] = True
    d[~keep] = 0.0
    return d


@dataclass(frozen=True)
class Landscape:
    """A 1D or 2D loss slice theta + a d1 (+ b d2).

    Attributes
    ----------
    alphas : numpy.ndarray
    betas : numpy.ndarray or None
        None for a 1D slice.
    losses : numpy.ndarray
        (len(alphas),) or (len(alphas), len(betas)).
    directions : list of numpy.ndarray
        d1 (and d2), laid out like ``model.flat``.
    base_loss : float
        The loss at theta (alpha = beta = 0).
    """

    alphas: np.ndarray
    betas: np.ndarray | None
    losses: np.ndarray
    directions: list = field(repr=False)
    base_loss: float


def _direction(model, x, y, spec, seed, normalization, ignore, exclude, block, loss, n_threads, count, extra):
    """``count`` directions from a spec: "random", "eigen", or explicit arrays."""
    if isinstance(spec, str):
        check_choice(spec, "direction", ("random", "eigen"))
        if spec == "random":  # direction i uses seed + i
            return [random_direction(model, seed=(check_seed(seed) + i) % 2**64, normalization=normalization, ignore=ignore,
                                     exclude=exclude, block=block)
                    for i in range(count)]
        eig = hessian_eigenvalues(model, x, y, k=count, block=block, exclude=exclude, seed=seed, loss=loss,
                                  n_threads=n_threads, **extra)
        return list(eig.vectors[:count])
    arrays = [spec] if count == 1 else list(spec)
    if len(arrays) != count:
        raise ValueError(f"need {count} direction arrays, got {len(arrays)}")
    out = []
    for a in arrays:
        a = np.asarray(a.flat_snapshot() if hasattr(a, "tensor_info") else a, dtype=np.float64)
        if a.shape != (model.num_parameters,) or not np.all(np.isfinite(a)):
            raise ValueError(f"a direction must be a finite array of shape ({model.num_parameters},)")
        out.append(a.copy())
    return out


def _grid(values, default, name):
    arr = np.asarray(default if values is None else values, dtype=np.float64).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be a non-empty finite array")
    return arr


def landscape_1d(model: EngineModel, x: ArrayLike, y: ArrayLike, *, direction: str | ArrayLike = "random",
                 alphas: ArrayLike | None = None, target: EngineModel | ArrayLike | None = None, seed: int = 0,
                 normalization: str | None = "filter", ignore: str | None = "biasbn", block: BlockSpec = None,
                 exclude: Exclude = ("positional",), loss: str = "mse", n_threads: int | None = None,
                 decoder_input: ArrayLike | None = None) -> Landscape:
    """Loss along theta + alpha d.

    Parameters
    ----------
    direction : "random", "eigen" or array
        A filter-normalised random direction (``random_direction(model, seed, ...)``), the unit top Hessian
        eigenvector (so that the curvature along alpha is lambda_max), or an explicit vector
        laid out like ``model.flat``.
    alphas : array, optional
        Default ``linspace(-1, 1, 21)``, or ``linspace(0, 1, 21)`` with a target.
    target : Transformer or array, optional
        Interpolate towards other parameters: d = target - theta (alpha=1 is the target,
        e.g. the initial model -> trained one). Overrides ``direction``.
    normalization, ignore : see ``random_direction``
    block, exclude : restrict random and eigen directions to a block.

    Returns
    -------
    Landscape
    """
    x, y, extra = _data(model, x, y, loss, decoder_input)
    if target is not None:
        t = np.asarray(target.flat_snapshot() if hasattr(target, "tensor_info") else target, dtype=np.float64)
        if t.shape != (model.num_parameters,):
            raise ValueError(f"target must have {model.num_parameters} parameters, got shape {t.shape}")
        d = t - model.flat_snapshot().astype(np.float64)
        alphas = _grid(alphas, np.linspace(0, 1, 21), "alphas")
    else:
        d = _direction(model, x, y, direction, seed, normalization, ignore, exclude, block, loss, n_threads, 1,
                       extra)[0]
        alphas = _grid(alphas, np.linspace(-1, 1, 21), "alphas")
    work, theta = _private_copy(model)
    base = _loss_at(work, theta, 0.0, x, y, loss, n_threads, extra=extra)
    losses = np.array([_loss_at(work, theta, a * d, x, y, loss, n_threads, extra=extra) for a in alphas])
    return Landscape(alphas=alphas, betas=None, losses=losses, directions=[d], base_loss=float(base))


def landscape_2d(model: EngineModel, x: ArrayLike, y: ArrayLike, *, directions: str | Sequence[ArrayLike] = "random",
                 alphas: ArrayLike | None = None, betas: ArrayLike | None = None, seed: int = 0,
                 normalization: str | None = "filter", ignore: str | None = "biasbn", block: BlockSpec = None,
                 exclude: Exclude = ("positional",), loss: str = "mse", n_threads: int | None = None,
                 decoder_input: ArrayLike | None = None) -> Landscape:
    """Loss on the plane theta + alpha d1 + beta d2.

    Parameters
    ----------
    directions : "random", "eigen" or (d1, d2)
        Two filter-normalised random directions (seeds ``seed`` and ``seed + 1``), the top two unit Hessian
        eigenvectors, or explicit vectors laid out like ``model.flat``.
    alphas, betas : arrays, optional
        Default ``linspace(-1, 1, 21)`` each.

    Returns
    -------
    Landscape
        ``losses[i, j]`` is the loss at ``alphas[i], betas[j]``.
    """
    x, y, extra = _data(model, x, y, loss, decoder_input)
    d1, d2 = _direction(model, x, y, directions, seed, normalization, ignore, exclude, block, loss, n_threads, 2,
                        extra)
    alphas = _grid(alphas, np.linspace(-1, 1, 21), "alphas")
    betas = _grid(betas, np.linspace(-1, 1, 21), "betas")
    losses = np.empty((alphas.size, betas.size))
    work, theta = _private_copy(model)
    base = _loss_at(work, theta, 0.0, x, y, loss, n_threads, extra=extra)
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            losses[i, j] = _loss_at(work, theta, a * d1 + b * d2, x, y, loss, n_threads, extra=extra)
    return Landscape(alphas=alphas, betas=betas, losses=losses, directions=[d1, d2], base_loss=float(base))
