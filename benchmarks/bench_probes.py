"""Probe time of sensiformer vs PyTorch, side by side in one process (not a test).

1. Gaussian sharpness (10 draws, sigma 0.02, one batch of 1024, the paper's default model
   d=128, n=20) vs the official implementation (``measurements.hessian_norm_proxy``): base loss,
   then for each draw ``functional_call`` with N(0, sigma^2) noise added to every
   ``state_dict`` entry except the positional embeddings. The official final measurement runs
   in eval mode with gradients enabled ("official"); "torch no_grad" is the same code under
   ``torch.no_grad()``, PyTorch's best case.
2. One exact Hessian-vector product (same model and batch) vs PyTorch's double backward
   (``autograd.grad`` with ``create_graph=True``, then the gradient of g.v; PyHessian's method;
   the math attention kernel, since fused SDPA kernels have no double backward).

Timings alternate A B A B; reported are medians over repeats and the ratio
PyTorch / sensiformer (> 1 means sensiformer is faster).

    python benchmarks/bench_probes.py [--quick] [--threads N] [--repeats R]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import sensiformer as sf


def sensiformer_sharpness(model, x, y, threads):
    return lambda: sf.probes.sharpness(model, x, y, sigma=0.02, repeats=10, n_threads=threads)


def torch_sharpness(module, x, y, no_grad):
    """The official hessian_norm_proxy: a fresh default-seeded generator per call (its quirk)."""
    import torch

    xt, yt = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y)
    criterion = torch.nn.MSELoss()

    def proxy():
        rng = torch.Generator().manual_seed(torch.initial_seed())
        base = criterion(module(xt), yt)
        state = module.state_dict()
        losses = []
        for _ in range(10):
            noisy = {k: v if "positional_encoding" in k else v + 0.02 * torch.randn(v.shape, generator=rng, dtype=v.dtype)
                     for k, v in state.items()}
            losses.append(criterion(torch.func.functional_call(module, noisy, (xt,)), yt))
        return (torch.stack(losses).mean() - base).item()

    def run():
        if no_grad:
            with torch.no_grad():
                return proxy()
        return proxy()

    return run


def sensiformer_hvp(model, x, y, v, threads):
    return lambda: sf.probes.hvp(model, x, y, v, n_threads=threads)


def torch_hvp(module, x, y, v_tensors):
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    xt, yt = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y)
    params = list(module.parameters())

    def run():
        with sdpa_kernel(SDPBackend.MATH):
            loss = ((module(xt) - yt) ** 2).mean()
            grads = torch.autograd.grad(loss, params, create_graph=True)
            dot = sum((g * v).sum() for g, v in zip(grads, v_tensors))
            return torch.autograd.grad(dot, params)

    return run


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compare(name, ours, theirs, repeats):
    ours(), theirs()  # warm-up
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        t_ours.append(timed(ours))
        t_theirs.append(timed(theirs))
    a, b = statistics.median(t_ours), statistics.median(t_theirs)
    print(f"{name:46s} {1e3 * a:12.1f} {1e3 * b:12.1f} {b / a:7.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small model and batch (smoke run)")
    parser.add_argument("--threads", type=int, default=sf.get_num_threads())
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    import torch

    from sensiformer.interop import to_torch

    torch.set_num_threads(args.threads)
    d, n, batch = (32, 10, 256) if args.quick else (128, 20, 1024)
    repeats = args.repeats or (3 if args.quick else 7)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(batch, n)).astype(np.uint8)
    y = sf.targets.Parity(n)(x)
    print(f"model d={d}, n={n}, batch {batch}; threads={args.threads}  "
          f"cpu_path={sf.show_config(print_out=False)['cpu_path']}  repeats={repeats}")
    print(f"{'probe':46s} {'sensiformer ms':>12s} {'pytorch ms':>12s} {'ratio':>7s}")
    for dtype, tdtype in (("float32", torch.float32), ("float64", torch.float64)):
        model = sf.Transformer(n, d_model=d, seed=0, dtype=dtype)
        module = to_torch(model)
        module.eval()  # as the official final measurement (gradients stay enabled)
        yd = y.astype(dtype)
        compare(f"sharpness R=10 {dtype} vs official", sensiformer_sharpness(model, x, yd, args.threads),
                torch_sharpness(module, x, yd, no_grad=False), repeats)
        compare(f"sharpness R=10 {dtype} vs torch no_grad", sensiformer_sharpness(model, x, yd, args.threads),
                torch_sharpness(module, x, yd, no_grad=True), repeats)
        module.train()
        v = rng.normal(size=model.num_parameters).astype(dtype)
        v_tensors = [torch.from_numpy(v[t["offset"]:t["offset"] + t["size"]].reshape(t["shape"]).copy()).to(tdtype)
                     for t in model.tensor_info]
        compare(f"HVP {dtype} vs double backward", sensiformer_hvp(model, x, yd, v, args.threads),
                torch_hvp(module, x, yd, v_tensors), repeats)


def jobs(threads, quick=False):
    """Harness jobs (for compare.py): sharpness vs the official proxy, HVP vs double backward."""
    import harness
    import torch

    from sensiformer.interop import to_torch

    d, n, batch = (32, 10, 256) if quick else (128, 20, 1024)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(batch, n)).astype(np.uint8)
    y = sf.targets.Parity(n)(x).astype(np.float32)
    model = sf.Transformer(n, d_model=d, seed=0)
    module = to_torch(model).eval()
    config = f"d={d}, n={n}, B={batch}, float32"
    forward = harness_flops = None
    try:
        import bench_train_step

        forward = bench_train_step.executed_forward_flops(d, n, batch)
    except ImportError:  # pragma: no cover
        pass
    harness_flops = None if forward is None else 11 * forward  # base loss + 10 perturbed forwards
    yield harness.Job("sharpness, R=10 (vs official)", config, sensiformer_sharpness(model, x, y, threads),
                      torch_sharpness(module, x, y, no_grad=False), flops=harness_flops)
    module.train()
    v = rng.normal(size=model.num_parameters).astype(np.float32)
    v_tensors = [torch.from_numpy(v[t["offset"]:t["offset"] + t["size"]].reshape(t["shape"]).copy())
                 for t in model.tensor_info]
    yield harness.Job("Hessian-vector product", config, sensiformer_hvp(model, x, y, v, threads),
                      torch_hvp(module, x, y, v_tensors), theirs_label="double backward")


if __name__ == "__main__":
    main()
