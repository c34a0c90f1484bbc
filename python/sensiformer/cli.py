"""The ``sensiformer`` command line."""

from __future__ import annotations

import argparse
import sys
import time

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sensiformer", description=__doc__)
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
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
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
