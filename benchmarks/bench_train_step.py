"""Training-step time of sensiformer vs the official PyTorch model, side by side (not a test).

Each call times ``steps`` training steps (sample a batch, forward, MSE, backward, AdamW) with
sensiformer's C loop and with PyTorch (the official TorchModel architecture in train mode,
torch.optim.AdamW, fresh torch.randint batches), interleaved, medians (see harness.py).

FLOPs (2 per multiply-add) are those sensiformer executes. Layers 0..L-2 compute every
position: 3x their forward (backward = dX + dW, each the size of the forward GEMMs), with layer
0's in-projection (6d^2 per row) only on its 2n distinct (token, position) rows when B > 2. The
last layer runs only the readout position, attending in the input space (no keys or values):
per sequence 3x its GEMMs (q, W_k^T q, W_v pooled, out-projection, FFN, readout: 8d^2 + 4 d d_ff
+ 2d) plus, per position and head, 4d forward (score, pooling) and 10d backward:
    3 B [(L-1) n (8d^2 + 4 d d_ff + 4 n d)] - 3 (B n - 2n) 6d^2 + B [3 (8d^2 + 4 d d_ff + 2d) + 14 n H d]
    (B > 2, L >= 2). PyTorch executes more (every position of every layer, keys and values
included): 3 B L n (8d^2 + 4 d d_ff + 4 n d).

    python benchmarks/bench_train_step.py [--quick] [--threads N] [--repeats R] [--json PATH]
"""

from __future__ import annotations

import argparse

import harness
import sensiformer as sf

CONFIGS = {
    "paper default": dict(d_model=128, n=20, batch=1024),
    "paper default, n=30": dict(d_model=128, n=30, batch=1024),
    "quick start": dict(d_model=64, n=10, batch=256),
    "long length, n=256": dict(d_model=4, n=256, batch=128),
    "long length, n=512": dict(d_model=4, n=512, batch=128),
    "scratchpad width": dict(d_model=32, n=128, batch=128),
}
QUICK = {"quick start": dict(d_model=64, n=10, batch=256)}


def executed_flops(d, n, batch, layers=2, d_ff=None, heads=2):
    """Training-step FLOPs sensiformer executes (see the module docstring)."""
    f = d if d_ff is None else d_ff
    full = n * (8 * d * d + 4 * d * f + 4 * n * d)
    distinct_rows_saving = (batch * n - 2 * n) * 6 * d * d if batch > 2 and layers >= 2 else 0
    last = 3 * (8 * d * d + 4 * d * f + 2 * d) + 14 * n * heads * d
    return 3.0 * (batch * (layers - 1) * full - distinct_rows_saving) + batch * last


def executed_forward_flops(d, n, batch, layers=2, d_ff=None, heads=2):
    """FLOPs of sensiformer's forward-only pass (forward(), probes): layer 0 on its 2n distinct
    (token, position) rows — with heads of at least 16 columns its scores from a 2n x 2n table per
    head and its out-projection folded into the values (attention_table.c): per position the
    folded values' mix (2 heads n d) and the FFN; else the in-projection alone on the distinct rows
    (more than 2 sequences) — middle layers in full, and a last layer with no keys or values, which
    scores and pools in the input space: per sequence the query, W_k^T q, W_v (pooled), the
    out-projection, the FFN and the readout; per position 4 heads d."""
    f = d if d_ff is None else d_ff
    full = n * (8 * d * d + 4 * d * f + 4 * n * d)
    last = 8 * d * d + 4 * d * f + 2 * d + n * 4 * heads * d
    if layers < 2:
        return float(batch * last)
    u = 2 * n
    if d // heads >= 16:
        first = u * 6 * d * d + 2 * u * u * d + 2 * u * d * d + batch * n * (2 * heads * n * d + 4 * d * f)
    else:
        first = batch * full - ((batch * n - u) * 6 * d * d if batch > 2 else 0)
    return float(first + batch * ((layers - 2) * full + last))


def sensiformer_steps(cfg, threads, steps):
    model = sf.Transformer(cfg["n"], d_model=cfg["d_model"], seed=0)
    trainer = sf.Trainer(model, sf.targets.Parity(cfg["n"]), optimizer=sf.AdamW(lr=3e-4, weight_decay=0.1),
                         batch_size=cfg["batch"], n_threads=threads)
    return lambda: trainer.fit(steps, log_every=steps, progress=False)


def torch_steps(cfg, threads, steps):
    import torch

    from sensiformer.interop import to_torch

    torch.set_num_threads(threads)
    module = to_torch(sf.Transformer(cfg["n"], d_model=cfg["d_model"], seed=0))
    module.train()
    opt = torch.optim.AdamW(module.parameters(), lr=3e-4, weight_decay=0.1)
    criterion = torch.nn.MSELoss()

    def run():
        for _ in range(steps):
            x = torch.randint(0, 2, (cfg["batch"], cfg["n"]))
            y = (x.sum(dim=1) % 2).float()
            loss = criterion(module(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return run


def jobs(threads, quick=False):
    for name, cfg in (QUICK if quick else CONFIGS).items():
        flops = executed_flops(cfg["d_model"], cfg["n"], cfg["batch"])
        steps = max(1, int(2e9 / flops))  # about 2 GFLOP of work per timed call
        yield harness.Job(f"training step ({name})", f"d={cfg['d_model']} n={cfg['n']} B={cfg['batch']}",
                          sensiformer_steps(cfg, threads, steps), torch_steps(cfg, threads, steps),
                          flops=flops * steps, extra=dict(steps_per_call=steps))


def main():
    args = harness.add_common_args(argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)).parse_args()
    machine = harness.describe_machine(args.threads)
    rows = [harness.measure(job, 1 if args.quick else args.repeats, machine["peak_gflops_fp32"])
            for job in jobs(args.threads, args.quick)]
    harness.remeasure_peak(rows, machine, args.threads)
    harness.print_table(rows, machine)
    if args.json:
        harness.write_json(rows, machine, args.json)


if __name__ == "__main__":
    main()
