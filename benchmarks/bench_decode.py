"""Autoregressive decoding of the scratchpad model (not a test): sensiformer's key/value cache vs
its own full recomputation (the reference path, the official autoregressive_answer's algorithm)
and vs the official decoding in PyTorch (TorchModelWithScratchpad.autoregressive_answer, the whole
model again at every step), side by side, interleaved, medians (harness.py).

The paper's autoregressive-accuracy measurement decodes n tokens for 1000 batches per run with
full recomputation, O(n) whole forwards per sequence (paper.md §6: ~5.7e18 FLOP over the sweep).
With the cache the encoder runs once and each step adds one decoder position.

FLOPs (2 per multiply-add) of the cached path per sequence, with L encoder and Ld decoder layers:
encoder T (L (4d^2 + 2 d F + 2 T d)) and the cross-attention keys/values Ld 2 d^2 T, then per step
t = 0..n-1 each decoder layer 6 d^2 + 2 d F + 2 (t+1) d + 2 T d, and the readout.

    python benchmarks/bench_decode.py [--n 512] [--batch 8] [--quick] [--threads N] [--repeats R]
                                      [--torch-repeats R] [--json PATH]
"""

from __future__ import annotations

import argparse
import time

import harness
import numpy as np

import sensiformer as sf


def cached_flops(n, d, batch, layers=2, dec_layers=2, d_ff=None):
    """FLOPs of decoding n tokens with the cache (see the module docstring)."""
    f = d if d_ff is None else d_ff
    encoder = n * layers * (4 * d * d + 2 * d * f + 2 * n * d) + dec_layers * 2 * d * d * n
    steps = sum(dec_layers * (6 * d * d + 2 * d * f + 2 * (t + 1) * d + 2 * n * d) + d for t in range(n))
    return 2.0 * batch * (encoder + steps)


def official_decode(model, x, threads):
    """The official decoding in PyTorch (the whole model again at every step)."""
    import torch

    from sensiformer.interop import to_torch

    torch.set_num_threads(threads)
    module = to_torch(model)
    xt = torch.from_numpy(x.astype(np.int64))

    def official():
        with torch.no_grad():
            return module.autoregressive_answer(xt)

    return official


def jobs(threads, quick=False):
    """For compare.py: decoding n tokens with the cache vs the official recomputation in PyTorch."""
    n, batch, d = (64, 8, 32) if quick else (512, 8, 32)
    model = sf.Seq2SeqTransformer(n, d_model=d, seed=0)
    x = np.random.default_rng(0).integers(0, 2, size=(batch, n), dtype=np.uint8)
    official = official_decode(model, x, threads)
    assert np.array_equal(official().numpy(), model.generate(x, n_threads=threads)), "decodings disagree"
    yield harness.Job("scratchpad decoding (KV cache)", f"n={n}, B={batch}, d={d}",
                      lambda: model.generate(x, n_threads=threads), official,
                      theirs_label="pytorch autoregressive_answer", flops=cached_flops(n, d, batch))


def main():
    parser = harness.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), default_repeats=3)
    parser.add_argument("--n", type=int, default=512, help="sequence length (decoded tokens)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--torch-repeats", type=int, default=1,
                        help="timed runs of the official PyTorch decoding (0: skip it)")
    args = parser.parse_args()
    n, batch, d = (64, 8, 32) if args.quick else (args.n, args.batch, args.d_model)
    threads = args.threads
    model = sf.Seq2SeqTransformer(n, d_model=d, seed=0)
    x = np.random.default_rng(0).integers(0, 2, size=(batch, n), dtype=np.uint8)
    config = f"n={n}, B={batch}, d={d}, {threads} thr"
    flops = cached_flops(n, d, batch)

    cached = model.generate(x, n_threads=threads)
    full = model.generate(x, cache=False, n_threads=threads)
    assert np.array_equal(cached, full), "the cache and full recomputation disagree"

    rows = [harness.measure(harness.Job(
        "decode: cache vs full recomputation", config, lambda: model.generate(x, n_threads=threads),
        lambda: model.generate(x, cache=False, n_threads=threads), theirs_label="sensiformer, no cache",
        flops=flops), args.repeats)]

    if args.torch_repeats > 0:
        official = official_decode(model, x, threads)
        assert np.array_equal(official().numpy(), cached), "the official decoding disagrees"
        ours = [harness.seconds(lambda: model.generate(x, n_threads=threads)) for _ in range(args.repeats)]
        theirs = [harness.seconds(official) for _ in range(args.torch_repeats)]
        a, b = float(np.median(ours)), float(np.median(theirs))
        rows.append(dict(job="decode: cache vs official torch", config=config, ours_ms=1e3 * a, theirs_ms=1e3 * b,
                         theirs="pytorch autoregressive_answer", ratio=b / a, gflops=flops / a / 1e9,
                         peak_fraction=None))

    machine = harness.describe_machine(threads, peak=False)
    harness.print_table(rows, machine)
    for r in rows:
        print(f"{r['job']}: {r['ratio']:.1f}x faster with the cache "
              f"({r['ours_ms'] / n:.3f} ms per token for {batch} sequences)")
    if args.json:
        harness.write_json(rows, machine, args.json)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"(total {time.perf_counter() - t0:.0f} s)")
