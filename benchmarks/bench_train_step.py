"""Training-step time of sensiformer vs the official PyTorch model, side by side in one process.

Each repeat times `steps` training steps (sample a batch, forward, MSE, backward, AdamW) with
sensiformer's C loop and with PyTorch (the official TorchModel architecture, train mode,
torch.optim.AdamW, fresh torch.randint batches), alternating A B A B. Reported: medians over
repeats, the ratio PyTorch/sensiformer (> 1 means sensiformer is faster), and GFLOP/s by the
nominal count PyTorch executes (3x the forward FLOPs of every position in every layer:
3 * B * n * L * (2*(4 d^2 + 2 d d_ff) + 4 n d)); sensiformer skips the last layer's
non-readout positions, so its executed FLOPs are lower than this nominal count.

    python benchmarks/bench_train_step.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import sensiformer as sf

CONFIGS = {
    "paper default (d=128, n=20, B=1024)": dict(d_model=128, n=20, batch=1024),
    "paper default at n=30": dict(d_model=128, n=30, batch=1024),
    "quick start (d=64, n=10, B=256)": dict(d_model=64, n=10, batch=256),
    "long length (d=4, n=256, B=128)": dict(d_model=4, n=256, batch=128),
    "scratchpad width (d=32, n=128, B=128)": dict(d_model=32, n=128, batch=128),
}
QUICK = {"quick start (d=64, n=10, B=256)": dict(d_model=64, n=10, batch=256)}


def nominal_flops(d, n, batch, layers=2, d_ff=None):
    d_ff = d if d_ff is None else d_ff
    forward = batch * n * layers * (2 * (4 * d * d + 2 * d * d_ff) + 4 * n * d)
    return 3 * forward


def make_sensiformer(cfg, threads):
    model = sf.Transformer(cfg["n"], d_model=cfg["d_model"], seed=0)
    trainer = sf.Trainer(model, sf.targets.Parity(cfg["n"]), optimizer=sf.AdamW(lr=3e-4, weight_decay=0.1),
                         batch_size=cfg["batch"], n_threads=threads)

    def run(steps):
        trainer.fit(steps, log_every=steps, progress=False)

    return run


def make_torch(cfg, threads):
    import torch

    from sensiformer.interop import to_torch

    torch.set_num_threads(threads)
    module = to_torch(sf.Transformer(cfg["n"], d_model=cfg["d_model"], seed=0))
    module.train()
    opt = torch.optim.AdamW(module.parameters(), lr=3e-4, weight_decay=0.1)
    criterion = torch.nn.MSELoss()

    def run(steps):
        for _ in range(steps):
            x = torch.randint(0, 2, (cfg["batch"], cfg["n"]))
            y = (x.sum(dim=1) % 2).float()
            loss = criterion(module(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return run


def time_once(run, steps):
    t0 = time.perf_counter()
    run(steps)
    return (time.perf_counter() - t0) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one small config, few repeats (CI smoke)")
    parser.add_argument("--threads", type=int, default=sf.get_num_threads())
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    configs = QUICK if args.quick else CONFIGS
    repeats = args.repeats or (3 if args.quick else 7)
    print(f"threads={args.threads}  cpu_path={sf.show_config(print_out=False)['cpu_path']}  repeats={repeats}")
    print(f"{'config':42s} {'sensiformer ms':>15s} {'pytorch ms':>11s} {'ratio':>7s} {'GFLOP/s (sf)':>13s}")
    for name, cfg in configs.items():
        ours, theirs = make_sensiformer(cfg, args.threads), make_torch(cfg, args.threads)
        flops = nominal_flops(cfg["d_model"], cfg["n"], cfg["batch"])
        steps = max(1, int(2e9 / flops))  # about 2 GFLOP of nominal work per timing
        ours(1), theirs(1)  # warm-up
        t_ours, t_theirs = [], []
        for _ in range(repeats):
            t_ours.append(time_once(ours, steps))
            t_theirs.append(time_once(theirs, steps))
        a, b = statistics.median(t_ours), statistics.median(t_theirs)
        print(f"{name:42s} {1e3 * a:15.2f} {1e3 * b:11.2f} {b / a:7.2f} {flops / a / 1e9:13.1f}")


if __name__ == "__main__":
    np.seterr(all="raise")
    main()
