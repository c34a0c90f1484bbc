"""The ``sensiformer`` command line.

  sensiformer train ...                         train one model and print its learning curve
  sensiformer reproduce scaling --preset quick --store results.db --plot scaling.png
  sensiformer sweep scaling --preset paper --executor tcp://scheduler:8786
  sensiformer sweep configs.jsonl --store results.db
  sensiformer plot scaling --preset quick --store results.db --out scaling.png
  sensiformer show results.db [--sweep NAME] [--export runs.csv]
  sensiformer show-config
  sensiformer selftest [--json report.json]       validate this installation on every CPU path

Exit status: 0 on success; 1 when runs of the sweep failed (they are listed; a rerun retries
them) or a self-test check failed; 2 for invalid arguments or files; 130 after Ctrl-C and 143
after SIGTERM (finished runs stay in the store and the same command resumes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from . import __version__
from ._interrupt import exit_code, terminate_as_interrupt

TARGETS = ("parity", "majority", "first", "mean", "random")


def _target(name, n, seed):
    from . import targets

    if name == "random":
        return targets.RandomFunction(n, seed=seed)
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


def cmd_selftest(args) -> int:
    from . import _selftest

    return _selftest.cli(args)


def _value(text):
    """A --set value: JSON if it parses ("0.1", "[4, 6]", "null"), a comma list, else a string."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return float(text)  # what JSON lacks: nan, inf (refused by the parameter's own check)
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


def _experiment_names():
    from .experiments import EXPERIMENTS

    return tuple(EXPERIMENTS)


def _experiment(args):
    """The experiment with its ``--set`` overrides; every run configuration of its first stage
    is built and checked here, so a bad value fails before any run starts."""
    from . import experiments
    from .sweep import check_buildable

    if args.experiment not in experiments.EXPERIMENTS:
        raise ValueError(f"unknown experiment {args.experiment!r}; choose from {', '.join(experiments.EXPERIMENTS)}")
    kwargs = _overrides(args.set)
    if args.variant:
        kwargs["variant"] = args.variant
    exp = experiments.EXPERIMENTS[args.experiment](preset=args.preset, **kwargs)
    try:
        check_buildable(exp.configs())
    except (ValueError, TypeError) as err:
        given = f" (given --set {' --set '.join(args.set)})" if args.set else ""
        raise ValueError(f"{err}{given}") from None
    return exp


def _executor(args):
    return args.executor if args.executor else None


def _run(args, exp_or_configs):
    from . import sweep

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sweep.SweepFailures)  # _failed() prints the failures instead
        store = sweep.run(exp_or_configs, store=args.store, executor=_executor(args), max_workers=args.workers,
                          n_threads=args.threads, progress=args.progress, run_progress=args.run_progress)
    return store, time.perf_counter() - started


def _sweep_names(exp_or_configs) -> list:
    from .sweep import default_sweep_name

    if isinstance(exp_or_configs, list):
        return [default_sweep_name(exp_or_configs)]
    return [exp_or_configs.stage_sweep(s) for s in exp_or_configs.stages]


def _failed(store, sweeps) -> int:
    """Print the runs of ``sweeps`` that have no result after the sweep (they raised) with
    their errors; return the exit status: 1 if there are any, else 0."""
    missing = {key for name in sweeps for key in store.pending(name)}
    if not missing:
        return 0
    total = sum(len(store.members(name)) for name in sweeps)
    failures = store.failures()
    failures = failures[failures["key"].isin(missing)].drop_duplicates("key", keep="last")
    last_lines = failures["error"].map(lambda text: text.strip().splitlines()[-1] if text.strip() else "?")
    print(f"\n{len(missing)} of {total} runs failed (a rerun of the same command retries them; "
          f"`sensiformer show {store.path}` shows the tracebacks):", file=sys.stderr)
    for line, count in last_lines.value_counts().items():
        print(f"  {count} x {line}", file=sys.stderr)
    return 1


def cmd_reproduce(args) -> int:
    exp = _experiment(args)
    configs = exp.configs()
    print(f"{exp.sweep}: {exp.figures}; {len(configs)} runs" + (" in its first stage" if len(exp.stages) > 1 else "")
          + f"; store {args.store}")
    if args.dry_run:
        return _dry_run(args, configs, first_stage_of=exp)
    store, elapsed = _run(args, exp)
    print(exp.report(store))
    print(f"finished in {elapsed / 60:.1f} min ({elapsed:.0f} s)" + _cpu_note(store, exp))
    if args.plot:
        exp.plot(store, path=args.plot)
        print(f"wrote {args.plot}")
    return _failed(store, _sweep_names(exp))


def _dry_run(args, configs, first_stage_of=None) -> int:
    """List the runs and estimate their CPU time; run nothing, create no store."""
    import pandas as pd

    from .sweep import Store, cost, usable_cpus

    stored = Store(args.store).keys() if Path(args.store).is_file() else set()
    print("calibrating on this machine (a few training steps of each of the runs' shapes) ...", flush=True)
    seconds = cost.cpu_seconds(configs)
    # every field, late ones at their defaults too: a grid over positional shows "concat" next to "none"
    rows = pd.DataFrame([{k: v for k, v in c.to_dict().items() if k != "tags"} for c in configs])
    varying = [c for c in rows.columns if rows[c].astype(str).nunique() > 1]
    table = (rows[varying] if varying else rows[["target", "n", "seed"]]).copy()
    table.insert(0, "key", [c.key for c in configs])
    table["stored"] = [c.key in stored for c in configs]
    table["est_cpu_s"] = seconds.round(1)
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.max_rows", 60):
        print(table.to_string(index=False) if len(table) <= 60 else table)
    todo = seconds[~table["stored"].to_numpy()]
    cpus = args.workers or usable_cpus()
    print(f"{len(configs)} runs, {len(configs) - len(todo)} already stored; the {len(todo)} to run need about "
          f"{_duration(todo.sum())} of CPU time: about {_duration(todo.sum() / cpus)} on {cpus} idle core(s) "
          f"(an estimate from timing each shape's training steps; probes counted as forward passes)")
    if first_stage_of is not None and len(first_stage_of.stages) > 1:
        print(f"later stages ({', '.join(s.name for s in first_stage_of.stages[1:])}) are built from the first "
              f"stage's results and are not included")
    return 0


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _cpu_note(store, exp) -> str:
    """The runs' CPU time: what the sweep costs on idle cores, whatever else the machine ran."""
    try:
        cpu = sum(float(store.runs(sweep=exp.stage_sweep(s))["cpu_seconds"].fillna(0).sum()) for s in exp.stages)
    except KeyError:
        return ""
    from .sweep import usable_cpus

    return f"; the runs used {cpu:.0f} CPU-seconds (about {cpu / usable_cpus() / 60:.1f} min on {usable_cpus()} idle cores)"


def cmd_sweep(args) -> int:
    from .sweep import RunConfig, check_buildable

    path = Path(args.experiment)
    if path.suffix in (".json", ".jsonl") and path.exists():
        text = path.read_text()
        items = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" \
            else json.loads(text)
        configs = [RunConfig.from_dict(c) for c in items]
        check_buildable(configs)
        print(f"{len(configs)} runs from {path}; store {args.store}")
        if args.dry_run:
            return _dry_run(args, configs)
        store, elapsed = _run(args, configs)
        print(f"finished in {elapsed:.0f} s; the store holds {len(store)} runs")
        return _failed(store, _sweep_names(configs))
    exp = _experiment(args)
    print(f"{exp.sweep}: store {args.store}")
    if args.dry_run:
        return _dry_run(args, exp.configs(), first_stage_of=exp)
    store, elapsed = _run(args, exp)
    print(store.sweeps().to_string(index=False))
    print(f"finished in {elapsed:.0f} s")
    return _failed(store, _sweep_names(exp))


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


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default in its help (flags and options whose default depends on the machine
    say it in words); the description's line breaks kept."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def _count(minimum):
    """An argparse type: an integer >= ``minimum`` (argparse names the option in its error)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def _add_run_options(p, experiment_choices=True):
    names = _experiment_names()
    if experiment_choices:
        p.add_argument("experiment", choices=names, help="the paper experiment")
    else:
        p.add_argument("experiment", metavar="EXPERIMENT|FILE",
                       help=f"an experiment ({', '.join(names)}) or a .json/.jsonl file of run configs")
    p.add_argument("--preset", choices=("ci", "quick", "paper"), default="quick", help="grid size")
    p.add_argument("--variant", default=None, help="scaling: short|long; dynamics: 20k|100k")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a parameter, e.g. --set lengths=4,6,8 --set steps=3000 (repeatable)")
    p.add_argument("--store", default="results.db", help="SQLite results store")


def _add_exec_options(p):
    p.add_argument("--executor", default=None,
                   help="where runs execute: processes (local, the default), serial, or a Dask scheduler "
                        "address tcp://host:port")
    p.add_argument("--workers", type=_count(1), default=None, help="local processes (default: one per core)")
    p.add_argument("--threads", type=_count(1), default=None,
                   help="threads per run (default: the cores per concurrent run for runs large enough "
                        "to use them, else 1)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--run-progress", action="store_true",
                   help="also a progress bar per run in flight (training steps and loss)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs and estimate their CPU time on this machine; run nothing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sensiformer", description=__doc__, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, help):
        return sub.add_parser(name, help=help, description=help, formatter_class=_Formatter)

    train = command("train", "train a transformer on a Boolean function and print the learning curve")
    train.add_argument("--target", choices=TARGETS, default="parity", help="the Boolean function")
    train.add_argument("--n", type=_count(1), default=10, help="input length")
    train.add_argument("--d-model", type=_count(1), default=64, help="model width")
    train.add_argument("--n-heads", type=_count(1), default=2, help="attention heads")
    train.add_argument("--n-layers", type=_count(1), default=2, help="layers")
    train.add_argument("--norm", choices=("post", "pre", "none"), default="post", help="LayerNorm placement")
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="parameter dtype")
    train.add_argument("--batch-size", type=_count(1), default=256, help="training batch size")
    train.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    train.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    train.add_argument("--steps", type=_count(0), default=3000, help="training steps")
    train.add_argument("--log-every", type=_count(1), default=250, help="steps per learning-curve row")
    train.add_argument("--seed", type=_count(0), default=0, help="initialisation and data seed")
    train.add_argument("--threads", type=_count(1), default=None, help="threads (default: every usable core)")
    train.add_argument("--save", default=None, help="write the trained model to this .npz file")
    train.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    train.set_defaults(func=cmd_train)

    show = command("show-config", "describe this build (OpenMP, CPU path, flags)")
    show.set_defaults(func=cmd_show_config)

    st = command("selftest", "validate this installation: the shipped suite on every CPU path, a report")
    st.add_argument("--path", action="append", default=None,
                    help="test only this CPU path: x86-64-v4, x86-64-v3 or baseline (repeatable; default: every "
                         "path this CPU can run)")
    st.add_argument("--json", default=None, metavar="PATH", help="also write the report here as JSON")
    st.add_argument("-k", default=None, metavar="EXPR", help="only the checks pytest's -k EXPR selects")
    st.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")
    st.set_defaults(func=cmd_selftest)

    rep = command("reproduce", "run a paper experiment (resumable), print its summary, plot it")
    _add_run_options(rep)
    _add_exec_options(rep)
    rep.add_argument("--plot", default=None, metavar="PNG", help="write the figure here")
    rep.set_defaults(func=cmd_reproduce)

    sw = command("sweep", "run an experiment's sweep or a JSON/JSONL file of run configs (resumable)")
    _add_run_options(sw, experiment_choices=False)
    _add_exec_options(sw)
    sw.set_defaults(func=cmd_sweep)

    pl = command("plot", "plot an experiment from its stored results")
    _add_run_options(pl)
    pl.add_argument("--out", default=None, metavar="PNG", help="output file (default: <experiment>.png)")
    pl.set_defaults(func=cmd_plot)

    sh = command("show", "summarise a results store; export it to CSV/Parquet")
    sh.add_argument("store", help="SQLite results store")
    sh.add_argument("--sweep", default=None, help="only this sweep's runs")
    sh.add_argument("--tail", type=_count(0), default=20, help="show the last N runs")
    sh.add_argument("--export", default=None, metavar="FILE", help="write a table to .csv or .parquet")
    sh.add_argument("--table", choices=("runs", "history"), default="runs", help="the table to export")
    sh.set_defaults(func=cmd_show)
    return parser


def _stopped(args, interrupt) -> str:
    """What a stopped sweep left: how many runs are stored, and how to resume."""
    what = "stopped by SIGTERM" if exit_code(interrupt) == 143 else "interrupted"
    path = getattr(args, "store", None)
    if args.func not in (cmd_reproduce, cmd_sweep) or not path or not Path(path).is_file():
        return what
    from .sweep import Store

    with Store(path) as store:
        stored = len(store)
    if stored == 0:
        return f"{what} before any run finished; run the same command again to start"
    return (f"{what}: {stored} finished run(s) are stored in {path}; run the same command again to resume "
            f"(stored runs are skipped)")


def _store_files(path) -> list:
    return [Path(str(path) + suffix) for suffix in ("", "-wal", "-shm", "-journal")]


def _discard_if_new_and_empty(path, existed: bool) -> None:
    """A failed command leaves no store behind that it created and wrote nothing into."""
    if existed or not path or not Path(path).is_file():
        return
    from .sweep import Store

    try:
        with Store(path) as store:
            empty = len(store) == 0 and len(store.failures()) == 0
    except (ValueError, OSError):
        return
    if empty:
        for f in _store_files(path):
            f.unlink(missing_ok=True)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "func", None) is cmd_plot and args.out is None:
        args.out = f"{args.experiment}.png"
    store = getattr(args, "store", None) if args.func in (cmd_reproduce, cmd_sweep) else None
    existed = bool(store) and Path(store).exists()
    status = 1
    try:
        with terminate_as_interrupt():
            status = args.func(args)
        return status
    except (ValueError, TypeError, ImportError, OSError) as err:
        print(f"sensiformer: error: {err}", file=sys.stderr)
        status = 2
        return status
    except KeyboardInterrupt as interrupt:
        print(f"\n{_stopped(args, interrupt)}", file=sys.stderr)
        status = exit_code(interrupt)
        return status
    finally:
        if status != 0:
            _discard_if_new_and_empty(store, existed)


if __name__ == "__main__":
    sys.exit(main())
