"""The ``sensiformer`` command line.

  sensiformer train ...                         train one model and print its learning curve
  sensiformer reproduce scaling --preset quick --store results.db --plot scaling.png
  sensiformer sweep scaling --preset paper --executor tcp://scheduler:8786
  sensiformer sweep configs.jsonl --store results.db
  sensiformer plot scaling --preset quick --store results.db --out scaling.png
  sensiformer show results.db [--sweep NAME] [--export runs.csv]
  sensiformer show-config
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

TARGETS = ("parity", "majority", "first", "mean", "random")


def _target(name, n, seed):
    from . import targets

    if name == "random":
        return targets.RandomFunction(n, seed)
    return {"parity": targets.Parity, "majority": targets.Majority, "first": targets.First,
            "mean": targets.Mean}[name](n)


def cmd_train(args) -> int:
    import sensiformer as sf

    model = sf.Transformer(args.n, d_model=args.d_model, n_heads=args.n_heads, n_layers=args.n_layers,
                           norm=args.norm, dtype=args.dtype, seed=args.seed)
    target = _target(args.target, args.n, args.seed)
    trainer = sf.Trainer(model, target, optimizer=sf.AdamW(lr=args.lr, weight_decay=args.weight_decay),
                         batch_size=args.batch_size, seed=args.seed, n_threads=args.threads)
    print(f"{model}\ntarget {target!r}, batch {args.batch_size}, AdamW lr={args.lr} wd={args.weight_decay}, "
          f"{sf.get_num_threads() if args.threads is None else args.threads} threads")
    started = time.perf_counter()
    history = trainer.fit(args.steps, log_every=args.log_every, progress=args.progress)
    elapsed = time.perf_counter() - started
    print("\nlearning curve (training loss and accuracy, mean over each window of steps):")
    print(history[["step", "loss", "accuracy", "grad_norm"]].to_string(index=False, float_format="%.6f"))
    result = trainer.evaluate()
    scope = "all 2^n inputs" if result["n_inputs"] == 2**args.n else f"{result['n_inputs']} fresh inputs"
    print(f"\nfinished {args.steps} steps in {elapsed:.1f} s ({1e3 * elapsed / max(args.steps, 1):.2f} ms/step)")
    print(f"eval MSE on {scope}: {result['loss']:.3g}   accuracy: {result['accuracy']:.4f}")
    if args.save:
        model.save(args.save)
        print(f"saved the model to {args.save}")
    return 0


def cmd_show_config(args) -> int:
    import sensiformer as sf

    sf.show_config()
    return 0


def _value(text):
    """A --set value: JSON if it parses ("0.1", "[4, 6]", "null"), a comma list, else a string."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    if "," in text:
        return tuple(_value(t.strip()) for t in text.split(",") if t.strip())
    if ".." in text:  # 4..10 -> range, inclusive
        lo, hi = text.split("..", 1)
        return tuple(range(int(lo), int(hi) + 1))
    return text


def _overrides(pairs):
    out = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise ValueError(f"--set takes key=value, got {pair!r}")
        key, text = pair.split("=", 1)
        value = _value(text)
        out[key.strip().replace("-", "_")] = tuple(value) if isinstance(value, list) else value
    return out


def _experiment(args):
    from . import experiments

    if args.experiment not in experiments.EXPERIMENTS:
        raise ValueError(f"unknown experiment {args.experiment!r}; choose from {', '.join(experiments.EXPERIMENTS)}")
    kwargs = _overrides(args.set)
    if args.variant:
        kwargs["variant"] = args.variant
    return experiments.EXPERIMENTS[args.experiment](preset=args.preset, **kwargs)


def _executor(args):
    return args.executor if args.executor else None


def _run(args, exp_or_configs):
    from . import sweep

    started = time.perf_counter()
    store = sweep.run(exp_or_configs, store=args.store, executor=_executor(args), max_workers=args.workers,
                      n_threads=args.threads, progress=args.progress, run_progress=args.run_progress)
    return store, time.perf_counter() - started


def cmd_reproduce(args) -> int:
    exp = _experiment(args)
    configs = exp.configs()
    print(f"{exp.sweep}: {exp.figures}; {len(configs)} runs" + (" in its first stage" if len(exp.stages) > 1 else "")
          + f"; store {args.store}")
    store, elapsed = _run(args, exp)
    print(exp.report(store))
    print(f"finished in {elapsed / 60:.1f} min ({elapsed:.0f} s)" + _cpu_note(store, exp))
    if args.plot:
        exp.plot(store, path=args.plot)
        print(f"wrote {args.plot}")
    return 0


def _cpu_note(store, exp) -> str:
    """The runs' CPU time: what the sweep costs on idle cores, whatever else the machine ran."""
    try:
        cpu = sum(float(store.runs(sweep=exp.stage_sweep(s))["cpu_seconds"].fillna(0).sum()) for s in exp.stages)
    except KeyError:
        return ""
    from .sweep import usable_cpus

    return f"; the runs used {cpu:.0f} CPU-seconds (about {cpu / usable_cpus() / 60:.1f} min on {usable_cpus()} idle cores)"


def cmd_sweep(args) -> int:
    from .sweep import RunConfig

    path = Path(args.experiment)
    if path.suffix in (".json", ".jsonl") and path.exists():
        text = path.read_text()
        items = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" \
            else json.loads(text)
        configs = [RunConfig.from_dict(c) for c in items]
        print(f"{len(configs)} runs from {path}; store {args.store}")
        store, elapsed = _run(args, configs)
        print(f"finished in {elapsed:.0f} s; the store holds {len(store)} runs")
        return 0
    exp = _experiment(args)
    print(f"{exp.sweep}: store {args.store}")
    store, elapsed = _run(args, exp)
    print(store.sweeps().to_string(index=False))
    print(f"finished in {elapsed:.0f} s")
    return 0


def cmd_plot(args) -> int:
    from .sweep import Store

    exp = _experiment(args)
    if not Path(args.store).exists():
        raise ValueError(f"no store at {args.store}")
    store = Store(args.store)
    if not len(exp.results(store)):
        held = ", ".join(store.sweeps()["sweep"]) if len(store) else "none"
        raise ValueError(f"{args.store} holds no finished runs of {exp.sweep} (check --preset and --set; its sweeps: "
                         f"{held}); no figure written")
    print(exp.report(store))
    exp.plot(store, path=args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_show(args) -> int:
    import pandas as pd

    from .sweep import Store

    if not Path(args.store).exists():
        raise ValueError(f"no store at {args.store}")
    store = Store(args.store)
    if args.export:
        path = store.export(args.export, table=args.table, sweep=args.sweep)
        print(f"wrote {args.table} to {path}")
        return 0
    print(f"{args.store}: {len(store)} finished runs")
    sweeps = store.sweeps()
    if len(sweeps):
        print(sweeps.to_string(index=False))
    runs = store.runs(sweep=args.sweep)
    if len(runs):
        cols = [c for c in ("key", "status", "target", "n", "seed", "lr", "weight_decay", "eval_loss", "converged",
                            "sharpness", "blowup_maxs_prod", "param_norm", "duration") if c in runs]
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            print(runs[cols].tail(args.tail).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    failures = store.failures()
    if len(failures):
        print(f"{len(failures)} failed attempt(s); last error:\n{failures['error'].iloc[-1]}")
    return 0


def _add_run_options(p):
    p.add_argument("experiment", help="experiment name (scaling, tradeoff, dynamics, generalization, scratchpad, "
                                      "length_generalization)")
    p.add_argument("--preset", choices=("ci", "quick", "paper"), default="quick")
    p.add_argument("--variant", default=None, help="scaling: short|long; dynamics: 20k|100k")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a parameter, e.g. --set lengths=4,6,8 --set steps=3000 (repeatable)")
    p.add_argument("--store", default="results.db", help="SQLite results store (default results.db)")


def _add_exec_options(p):
    p.add_argument("--executor", default=None,
                   help="processes (default), serial, or a Dask scheduler address tcp://host:port")
    p.add_argument("--workers", type=int, default=None, help="local processes (default: one per core)")
    p.add_argument("--threads", type=int, default=None, help="threads per run (default: 1 when runs share cores)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--run-progress", action="store_true",
                   help="also a progress bar per run in flight (training steps and loss)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sensiformer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a transformer on a Boolean function and print the learning curve")
    train.add_argument("--target", choices=TARGETS, default="parity")
    train.add_argument("--n", type=int, default=10, help="input length (default 10)")
    train.add_argument("--d-model", type=int, default=64)
    train.add_argument("--n-heads", type=int, default=2)
    train.add_argument("--n-layers", type=int, default=2)
    train.add_argument("--norm", choices=("post", "pre", "none"), default="post")
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    train.add_argument("--batch-size", type=int, default=256)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--weight-decay", type=float, default=0.1)
    train.add_argument("--steps", type=int, default=3000)
    train.add_argument("--log-every", type=int, default=250)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=None)
    train.add_argument("--save", default=None, help="write the trained model to this .npz file")
    train.add_argument("--no-progress", dest="progress", action="store_false")
    train.set_defaults(func=cmd_train)

    show = sub.add_parser("show-config", help="describe this build (OpenMP, CPU path, flags)")
    show.set_defaults(func=cmd_show_config)

    rep = sub.add_parser("reproduce", help="run a paper experiment (resumable), print its summary, plot it")
    _add_run_options(rep)
    _add_exec_options(rep)
    rep.add_argument("--plot", default=None, metavar="PNG", help="write the figure here")
    rep.set_defaults(func=cmd_reproduce)

    sw = sub.add_parser("sweep", help="run an experiment's sweep or a JSON/JSONL file of run configs (resumable)")
    _add_run_options(sw)
    _add_exec_options(sw)
    sw.set_defaults(func=cmd_sweep)

    pl = sub.add_parser("plot", help="plot an experiment from its stored results")
    _add_run_options(pl)
    pl.add_argument("--out", default=None, metavar="PNG", help="output file (default: <experiment>.png)")
    pl.set_defaults(func=cmd_plot)

    sh = sub.add_parser("show", help="summarise a results store; export it to CSV/Parquet")
    sh.add_argument("store")
    sh.add_argument("--sweep", default=None, help="only this sweep's runs")
    sh.add_argument("--tail", type=int, default=20, help="show the last N runs (default 20)")
    sh.add_argument("--export", default=None, metavar="FILE", help="write a table to .csv or .parquet")
    sh.add_argument("--table", choices=("runs", "history"), default="runs")
    sh.set_defaults(func=cmd_show)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "func", None) is cmd_plot and args.out is None:
        args.out = f"{args.experiment}.png"
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:
        print(f"sensiformer: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
