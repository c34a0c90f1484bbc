"""Peak memory of a paper-default training run (d=128, n=20, B=1024, AdamW), sensiformer vs PyTorch.

Each side runs in a fresh subprocess: RSS after its imports (the interpreter, NumPy, ...), then
a few training steps, then the peak RSS (getrusage). The memory the run itself needs is
    parameters + gradients + optimizer state (AdamW: 2 moments) + activations of one batch,
where sensiformer's activations are its engine workspace (saved forward activations and
backward scratch, ``Transformer.workspace_bytes``). Reported: the peak RSS minus the import
baseline, divided by that sum (target <= 1.5), and the same for PyTorch's run.

    python benchmarks/bench_memory.py [--steps S] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
side, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
import numpy as np
import sensiformer as sf
if side == "torch":
    import torch
    from sensiformer.interop import to_torch
    torch.set_num_threads(threads)
base = rss()
model = sf.Transformer(20, d_model=128, seed=0)
state = model.num_parameters * 4 * 4  # parameters, gradients, two AdamW moments (float32)
if side == "sensiformer":
    trainer = sf.Trainer(model, sf.targets.Parity(20), optimizer=sf.AdamW(lr=3e-4, weight_decay=0.1),
                         batch_size=1024, n_threads=threads)
    trainer.fit(steps, log_every=steps, progress=False)
    activations = model.workspace_bytes
else:
    module = to_torch(model).train()
    opt = torch.optim.AdamW(module.parameters(), lr=3e-4, weight_decay=0.1)
    for _ in range(steps):
        x = torch.randint(0, 2, (1024, 20))
        loss = torch.nn.functional.mse_loss(module(x), (x.sum(1) % 2).float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    activations = None
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(side=side, base=base, peak=peak, state=state, activations=activations)))
"""


def run(side, steps, threads):
    out = subprocess.run([sys.executable, "-c", CHILD, side, str(steps), str(threads)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    mb = 1 / 2**20
    ours, theirs = run("sensiformer", args.steps, args.threads), run("torch", args.steps, args.threads)
    need = ours["state"] + ours["activations"]
    print(f"paper default (d=128, n=20, B=1024), {args.steps} AdamW steps, {args.threads} threads")
    print(f"  parameters + gradients + AdamW state: {ours['state'] * mb:8.1f} MiB")
    print(f"  sensiformer activation workspace:     {ours['activations'] * mb:8.1f} MiB")
    for r in (ours, theirs):
        grown = r["peak"] - r["base"]
        print(f"  {r['side']:<12} RSS after imports {r['base'] * mb:7.1f} MiB, peak {r['peak'] * mb:7.1f} MiB, "
              f"run added {grown * mb:7.1f} MiB = {grown / need:.2f} x (state + sensiformer's activations)")


if __name__ == "__main__":
    main()
