"""Every benchmark job, sensiformer vs PyTorch (or NumPy), side by side in one process.

Runs the jobs of bench_train_step.py, bench_probes.py, bench_decode.py and bench_sensitivity.py
plus the model truth table and Monte-Carlo sensitivity, interleaved with medians (harness.py), and prints one
table: time of each side, the ratio (> 1: sensiformer is faster), achieved GFLOP/s (FLOPs
sensiformer executes, formulas in each script) and the fraction of the fp32 FMA peak measured
in the same run (sensiformer.show_config(peak=True), at the start and again at the end: the
larger counts, since a busy moment only lowers it), at the widest vector width of the CPU. The
header names the CPU, the engine's CPU path and its vector width. --json writes the rows for
comparison across commits.

--path x86-64-v3 runs every job with the engine on that path; --path x86-64-v3,x86-64-v4 (or
--path all) times each job's sensiformer side on every listed path, interleaved with PyTorch in
one process, and prints a path-vs-path table.

--torch-isa avx2 caps PyTorch's kernels (ATen, MKL, oneDNN) at AVX2 as well. With --path x86-64-v3
on an AVX-512 machine, both sides then run the code an AVX2 host would run (at this machine's
clock and caches): the closest this machine comes to measuring on an AVX2 host. The header
reports PyTorch's capability.

    python benchmarks/compare.py [--quick] [--threads N] [--repeats R] [--json PATH] [--path P[,P...]]
                                 [--torch-isa avx2]
"""

from __future__ import annotations

import argparse
import os

import bench_decode
import bench_probes
import bench_sensitivity
import bench_train_step
import harness
import numpy as np

import sensiformer as sf


def truth_table_jobs(threads, quick=False):
    """The model's function on all 2^n inputs: sensiformer's chunked forward vs batched torch."""
    import torch

    from sensiformer.interop import to_torch

    n, d = (12, 32) if quick else (16, 128)
    model = sf.Transformer(n, d_model=d, seed=0)
    module = to_torch(model).eval()
    x = torch.from_numpy(sf.targets.all_inputs(n).astype(np.int64))

    def theirs():
        with torch.no_grad():
            return torch.cat([module(x[i:i + 4096]) for i in range(0, len(x), 4096)])

    flops = bench_train_step.executed_forward_flops(d, n, 2**n)
    yield harness.Job("exact model truth table", f"d={d}, all 2^{n} inputs",
                      lambda: sf.analysis.truth_table(model, n, progress=False, n_threads=threads), theirs,
                      flops=flops)


def mc_sensitivity_jobs(threads, quick=False):
    """Monte-Carlo sensitivity: 256 inputs, each with its n flips, in batched forwards."""
    import torch

    from sensiformer.interop import to_torch

    n, d, samples = (10, 32, 64) if quick else (20, 128, 256)
    model = sf.Transformer(n, d_model=d, seed=0)
    module = to_torch(model).eval()

    def theirs():
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 2, (samples, n), generator=g)
        flips = x[:, None, :].repeat(1, n + 1, 1)
        idx = torch.arange(n)
        flips[:, idx + 1, idx] ^= 1  # row 0 is the input, row i+1 flips bit i
        with torch.no_grad():
            out = (module(flips.reshape(-1, n)) > 0.5).reshape(samples, n + 1)
        return (out[:, 1:] != out[:, :1]).sum(dim=1).double().mean().item()

    flops = bench_train_step.executed_forward_flops(d, n, samples * (n + 1))
    yield harness.Job("Monte-Carlo sensitivity", f"d={d}, n={n}, {samples} inputs x (n+1)",
                      lambda: sf.analysis.model_sensitivity(model, n, exact=False, samples=samples, seed=0,
                                                            n_threads=threads), theirs, flops=flops)


# what caps each of PyTorch's kernel libraries at AVX2 (read when torch loads)
TORCH_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def main():
    parser = harness.add_common_args(argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--torch-isa", choices=["default", "avx2"], default="default",
                        help="cap PyTorch's kernels at AVX2 (with --path x86-64-v3: an AVX2 host, emulated)")
    args = parser.parse_args()
    if args.torch_isa == "avx2":
        os.environ.update(TORCH_AVX2)
    import torch

    torch.set_num_threads(args.threads)
    paths = harness.parse_paths(args.path)
    if len(paths) == 1:
        sf._native.select_cpu_path(paths[0])
    machine = harness.describe_machine(args.threads)
    machine["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    repeats = 1 if args.quick else args.repeats
    sources = (bench_train_step.jobs, bench_probes.jobs, mc_sensitivity_jobs, truth_table_jobs,
               bench_decode.jobs, bench_sensitivity.jobs)
    rows = []
    for source in sources:
        for job in source(args.threads, args.quick):
            if len(paths) > 1:
                rows.append(harness.measure_paths(job, paths, repeats, machine["peak_gflops_fp32"]))
            else:
                rows.append(harness.measure(job, repeats, machine["peak_gflops_fp32"]))
            print(f"  measured {job.name} ({job.config})", flush=True)
    harness.remeasure_peak(rows, machine, args.threads)
    if len(paths) > 1:
        harness.print_path_table(rows, paths, machine)
    else:
        harness.print_table(rows, machine)
    if args.json:
        harness.write_json(rows, machine, args.json)


if __name__ == "__main__":
    main()
