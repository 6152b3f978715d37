"""Command line: ``python -m amnesiac run EXPERIMENT --profile full --seeds 0 1 2 --device auto``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .experiments import EXPERIMENTS, OVERRIDES, PROFILES, format_table, get_experiment, parse_overrides, run, summarize
from .training import pick_device


def _parser() -> argparse.ArgumentParser:
    exps = "\n  ".join(EXPERIMENTS)
    parser = argparse.ArgumentParser(
        prog="python -m amnesiac",
        description="Run amnesiac-unlearning experiments (results are cached under results/).",
        epilog=f"experiments:\n  {exps}\nprofiles: {', '.join(PROFILES)} (smoke: minutes on CPU; full: the seed's "
               "scale)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)  # options every computing command takes
    common.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    r = sub.add_parser("run", parents=[common], help="run (or load) an experiment and print its summary table")
    r.add_argument("experiment", choices=list(EXPERIMENTS) + ["all-mnist"], metavar="EXPERIMENT",
                   help="one of: " + ", ".join(EXPERIMENTS) + ", or all-mnist")
    r.add_argument("--profile", default="full", choices=PROFILES)
    r.add_argument("--seeds", type=int, nargs="+", default=None, help="override the profile's seeds")
    r.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    r.add_argument("--recompute", action="store_true", help="ignore cached results")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="change a setting (repeatable), e.g. --set forget_class=5 --set alphas=0.3,0.1; keys: "
                        + ", ".join(OVERRIDES))
    b = sub.add_parser("bench", parents=[common], help="benchmark logging overhead, unlearning latency and memory")
    b.add_argument("--profile", default="full", choices=["smoke", "full"])
    b.add_argument("--device", default="auto")
    b.add_argument("--tables", action="store_true",
                   help="print the README's tables from the committed results/bench/<profile>.json (no run)")
    b.add_argument("--ledger-read", type=Path, default=None, metavar="DIR",
                   help="build a memory-mapped ResNet-18 ledger of 500 per-sample groups in DIR (22 GB in float32) "
                        "and time reading 1 and 100 deltas (writes results/bench/ledger-read-<dtype>.json)")
    b.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="the --ledger-read ledger's storage dtype")
    b.add_argument("--ddp", action="store_true",
                   help="measure DistributedDataParallel with a sharded ledger, 1 and 2 processes (writes "
                        "results/bench/ddp.json)")
    study = argparse.ArgumentParser(add_help=False, parents=[common])  # options every study takes
    study.add_argument("--profile", default="full", choices=["smoke", "full"])
    study.add_argument("--seeds", type=int, nargs="+", default=None, help="override the profile's seeds")
    study.add_argument("--device", default="cpu", help="cpu (default; runs are bit-reproducible there) or cuda")
    study.add_argument("--quiet", action="store_true", help="no progress bars")
    f = sub.add_parser("fidelity", parents=[study],
                       help="the counterfactual-fidelity study: ledger subtraction against replays")
    f.add_argument("--optimizers", nargs="+", default=None, help="a subset of: adam sgd adamw")
    g = sub.add_parser("propagation", parents=[study],
                       help="the propagated attribution against the replays (and the exact delta)")
    g.add_argument("--optimizers", nargs="+", default=None, help="a subset of: adam sgd adamw")
    g.add_argument("--every", type=int, default=None, help="Hessian-vector products every k-th step (default 1)")
    k = sub.add_parser("comparison", parents=[study],
                       help="every method with the same tuning budget, chosen on validation, reported on test")
    k.add_argument("--optimizers", nargs="+", default=None, help="a subset of: adam sgd adamw")
    k.add_argument("--methods", nargs="+", default=None,
                   help="a subset of: amnesiac finetune relabel neggrad_plus ssd scrub")
    h = sub.add_parser("membership", parents=[study],
                       help="membership attacks that can detect forgetting (class, canaries, U-LiRA)")
    h.add_argument("--parts", nargs="+", default=["class", "canary", "lira", "methods"],
                   help="a subset of: class canary lira methods")
    sub.add_parser("list", help="list experiments and profiles")
    return parser


def _save_bench(name: str, result: dict) -> dict:
    """Stamp a CPU benchmark's result with provenance and write it to ``results/bench/<name>.json``."""
    from .experiments import RESULTS_ROOT, _atomic_write_json, provenance

    result = {**result, "provenance": provenance(pick_device("cpu"))}
    _atomic_write_json(RESULTS_ROOT / "bench" / f"{name}.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    if args.command == "bench":
        from .bench import format_bench, run_bench

        if args.tables:
            import json

            from .bench import readme_scaleout_tables, readme_tables
            from .experiments import RESULTS_ROOT

            print(readme_tables(json.loads((RESULTS_ROOT / "bench" / f"{args.profile}.json").read_text())))
            print("\n" + readme_scaleout_tables(RESULTS_ROOT / "bench"))
            return 0
        if args.ledger_read is not None:
            import shutil

            from .bench import ledger_read_times

            try:
                result = _save_bench(f"ledger-read-{args.dtype}", ledger_read_times(args.ledger_read, dtype=args.dtype))
            finally:
                shutil.rmtree(args.ledger_read, ignore_errors=True)  # tens of GB
            print(result)
            return 0
        if args.ddp:
            from .distributed import format_scaling, scaling_benchmark

            print(format_scaling(_save_bench("ddp", scaling_benchmark())))
            return 0
        print(format_bench(run_bench(args.profile, device=args.device)))
        return 0
    if args.command == "fidelity":
        from .fidelity import format_summary, run_study

        result = run_study(args.profile, seeds=args.seeds, optimizers=args.optimizers, device=args.device,
                           progress=not args.quiet)
        print(format_summary(result))
        return 0
    if args.command == "propagation":
        from .propagation import run_study, summary_rows

        result = run_study(args.profile, seeds=args.seeds, optimizers=args.optimizers, propagate_every=args.every,
                           device=args.device, progress=not args.quiet)
        for opt in result.study.optimizers:
            for row in summary_rows(result, opt):
                print(f"{opt:6s} {row['set']:12s} recovered (zero-weighted replay): exact a=1 "
                      f"{row['exact_recovered'][0]:+.3f}, propagated a=1 {row['propagated_recovered'][0]:+.3f}, "
                      f"fine-tune {row['finetune_recovered'][0]:+.3f}; overhead {row['overhead'][0]:.1f}x")
        return 0
    if args.command == "comparison":
        from .comparison import format_summary
        from .comparison import run_study as run_comparison

        print(format_summary(run_comparison(args.profile, seeds=args.seeds, optimizers=args.optimizers,
                                            methods=args.methods, device=args.device, progress=not args.quiet)))
        return 0
    if args.command == "membership":
        from .membership import run_study as run_membership

        result = run_membership(args.profile, seeds=args.seeds, device=args.device, progress=not args.quiet,
                                parts=args.parts)
        for name, rec in sorted(result.pieces.items()):
            if "original" in rec and isinstance(rec["original"], dict) and "auc" in rec["original"]:
                print(f"{name:16s} attack AUC on the original {rec['original']['auc']:.3f}")
        print(f"results: {result.folder}")
        return 0
    if args.command == "list":
        for name in EXPERIMENTS:
            exp = get_experiment(name)
            print(f"{name:28s} {exp.dataset:9s} {exp.model:9s} {exp.kind:8s} {len(exp.methods)} methods")
        return 0
    names = [n for n in EXPERIMENTS if n.startswith("mnist")] if args.experiment == "all-mnist" else [args.experiment]
    try:
        overrides = parse_overrides(args.overrides)
        for name in names:  # check every setting before anything runs
            get_experiment(name, args.profile, overrides=overrides)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name in names:
        result = run(name, args.profile, seeds=tuple(args.seeds) if args.seeds else None, device=args.device,
                     progress=not args.quiet, recompute=args.recompute, overrides=overrides)
        print(f"\n== {name} ({args.profile}, seeds {sorted(result.seeds)}) -> {result.folder}")
        if not result.available:
            print(f"data not available: {result.reason}")
            continue
        metrics = (("acc_test_forgotten", "acc_test_rest", "mia_loss") if result.experiment.kind == "class"
                   else ("acc_forget", "acc_test", "mia_loss", "dist_param"))
        for stage in ("no_repair", "after_repair"):
            print(f"-- {stage}")
            print(format_table(summarize(result, metrics, stage), metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
