"""Command line: ``python -m amnesiac_paper run EXPERIMENT --profile full --seeds 0 1 2 --device auto``.

Exit status: 0 when the command did its work, 1 when an experiment's data are not available (the reason is on
stderr), 2 when the command line is refused (one ``error:`` line on stderr, before anything runs).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

from amnesiac.training import pick_device

from .experiments import EXPERIMENTS, OVERRIDES, format_table, get_experiment, parse_overrides, run, summarize
from .store import PROFILES


def _seed(text: str) -> int:
    """An argparse type: a seed is an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"seeds are integers >= 0, got {text!r}")
    return value


def _threads(text: str) -> int:
    """An argparse type: a number of threads is an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"the number of threads is an integer >= 1, got {text!r}")
    return value


def _device(text: str) -> str:
    """An argparse type: a device this machine has (``auto``, ``cpu``, or ``cuda`` where CUDA is available)."""
    try:
        pick_device(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


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
    common.add_argument("--threads", type=_threads, default=None, help="torch CPU threads (default: torch's choice)")
    r = sub.add_parser("run", parents=[common], help="run (or load) an experiment and print its summary table")
    r.add_argument("experiment", choices=list(EXPERIMENTS) + ["all-mnist"], metavar="EXPERIMENT",
                   help="one of: " + ", ".join(EXPERIMENTS) + ", or all-mnist")
    r.add_argument("--profile", default="full", choices=PROFILES)
    r.add_argument("--seeds", type=_seed, nargs="+", default=None, help="override the profile's seeds")
    r.add_argument("--device", default="auto", type=_device, help="auto (CUDA if available), cpu or cuda")
    r.add_argument("--recompute", action="store_true", help="ignore cached results")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="change a setting (repeatable), e.g. --set forget_class=5 --set alphas=0.3,0.1; keys: "
                        + ", ".join(OVERRIDES))
    b = sub.add_parser("bench", parents=[common], help="benchmark logging overhead, unlearning latency and memory")
    b.add_argument("--profile", default="full", choices=["smoke", "full"])
    b.add_argument("--device", default="auto", type=_device, help="auto (CUDA if available), cpu or cuda")
    b.add_argument("--tables", action="store_true",
                   help="print the README's tables from the committed results/bench/<profile>.json (no run)")
    b.add_argument("--ledger-read", type=Path, default=None, metavar="DIR",
                   help="build a memory-mapped ResNet-18 ledger of 500 per-sample groups (22 GB in float32) in a new "
                        "folder inside DIR, time reading 1 and 100 deltas (writes "
                        "results/bench/ledger-read-<dtype>.json), and remove that folder; nothing else in DIR is "
                        "touched")
    b.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="the --ledger-read ledger's storage dtype")
    b.add_argument("--ddp", action="store_true",
                   help="measure DistributedDataParallel with a sharded ledger, 1 and 2 processes (writes "
                        "results/bench/ddp.json)")
    study = argparse.ArgumentParser(add_help=False, parents=[common])  # options every study takes
    study.add_argument("--profile", default="full", choices=["smoke", "full"])
    study.add_argument("--seeds", type=_seed, nargs="+", default=None, help="override the profile's seeds")
    study.add_argument("--device", default="cpu", type=_device,
                       help="cpu (default; runs are bit-reproducible there) or cuda")
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
    from .bench import BENCH_SEMANTICS
    from .store import atomic_write_json, provenance, results_root

    result = {**result, "provenance": provenance(pick_device("cpu"), semantics=BENCH_SEMANTICS)}
    atomic_write_json(results_root() / "bench" / f"{name}.json", result)
    return result


def _ledger_folder_problem(folder: Path) -> str | None:
    """Why ``bench --ledger-read`` cannot write its ledger inside ``folder`` (``None``: it can)."""
    if folder.exists() and not folder.is_dir():
        return f"--ledger-read {folder}: not a directory; give a folder the ledger may be written in"
    if not folder.exists() and not folder.parent.is_dir():
        return f"--ledger-read {folder}: its parent folder {folder.parent} does not exist; create it first"
    return None


def ledger_read_bench(folder: Path, dtype: str = "float32", **sizes) -> dict:
    """Time reading a memory-mapped ledger (:func:`amnesiac_paper.bench.ledger_read_times`, ``sizes``: its keyword
    arguments), written in a new folder inside ``folder`` (made if missing), and save the result (``results/bench/
    ledger-read-<dtype>.json``). The ledger's folder is removed afterwards, whether the benchmark ends or fails, and
    so is ``folder`` if this made it and it is empty; nothing else in ``folder`` is ever touched."""
    from . import bench

    folder = Path(folder)
    problem = _ledger_folder_problem(folder)
    if problem:
        raise ValueError(problem)
    try:
        folder.mkdir()
        made = True
    except FileExistsError:
        made = False
    work = Path(tempfile.mkdtemp(dir=folder, prefix="amnesiac-ledger-read-"))
    try:
        return _save_bench(f"ledger-read-{dtype}", bench.ledger_read_times(work / "ledger", dtype=dtype, **sizes))
    finally:
        shutil.rmtree(work, ignore_errors=True)  # tens of GB, and only what this run wrote
        if made:
            with contextlib.suppress(OSError):  # rmdir removes an empty folder only
                folder.rmdir()


def _check_study(args: argparse.Namespace) -> None:
    """Build a study command's config before anything runs: its own checks (profile, seeds, optimizers, methods,
    parts, ...) raise ``ValueError`` or ``KeyError`` here, not after a study has started."""
    if args.command == "fidelity":
        from .fidelity import get_study

        get_study(args.profile, seeds=args.seeds, optimizers=args.optimizers)
    elif args.command == "propagation":
        from .propagation import get_propagation_study

        get_propagation_study(args.profile, seeds=args.seeds, optimizers=args.optimizers,
                              propagate_every=args.every)
    elif args.command == "comparison":
        from .comparison import get_comparison_study

        get_comparison_study(args.profile, seeds=args.seeds, optimizers=args.optimizers, methods=args.methods)
    elif args.command == "membership":
        from .membership import PARTS, get_membership_study

        bad = [p for p in args.parts if p not in PARTS]
        if bad:
            raise ValueError(f"unknown part(s) {bad}; valid: {', '.join(PARTS)}")
        get_membership_study(args.profile, seeds=args.seeds)


def _error(message: object) -> int:
    """Report a refused command on one line of stderr; the exit status (2, as argparse's own errors)."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _check_study(args)
    except ValueError as err:
        return _error(err)
    except KeyError as err:
        return _error(err.args[0] if err.args else err)
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.command == "bench":
        from .bench import format_bench, run_bench

        if args.tables:
            import json

            from .bench import readme_scaleout_tables, readme_tables
            from .store import results_root

            path = results_root() / "bench" / f"{args.profile}.json"
            if not path.is_file():
                return _error(f"no benchmark result at {path}; make one with: python -m amnesiac_paper bench --profile "
                              f"{args.profile}")
            print(readme_tables(json.loads(path.read_text())))
            print("\n" + readme_scaleout_tables(results_root() / "bench"))
            return 0
        if args.ledger_read is not None:
            problem = _ledger_folder_problem(args.ledger_read)
            if problem:
                return _error(problem)
            print(ledger_read_bench(args.ledger_read, args.dtype))
            return 0
        if args.ddp:
            from .ddp_bench import format_scaling, scaling_benchmark

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
            get_experiment(name, args.profile, seeds=args.seeds, overrides=overrides)
    except ValueError as err:
        return _error(err)
    status = 0
    for name in names:
        result = run(name, args.profile, seeds=tuple(args.seeds) if args.seeds else None, device=args.device,
                     progress=not args.quiet, recompute=args.recompute, overrides=overrides)
        print(f"\n== {name} ({args.profile}, seeds {sorted(result.seeds)}) -> {result.folder}")
        if not result.available:
            print(f"data not available: {result.reason}", file=sys.stderr)
            status = 1
            continue
        metrics = (("acc_test_forgotten", "acc_test_rest", "mia_loss") if result.experiment.kind == "class"
                   else ("acc_forget", "acc_test", "mia_loss", "dist_param"))
        for stage in ("no_repair", "after_repair"):
            print(f"-- {stage}")
            print(format_table(summarize(result, metrics, stage), metrics))
    return status


if __name__ == "__main__":
    sys.exit(main())
