"""The command line's shared parts: the :class:`Command` record each study fills in (its subcommand lives with
the study, and ``python -m amnesiac_paper`` is the table of them), argument types, the options every command
takes, and one-line errors.

Exit status: 0 when the command did its work, 1 when an experiment's data are not available (the reason is on
stderr), 2 when the command line is refused (one ``error:`` line on stderr, before anything runs).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from amnesiac.training import pick_device

from .store import PROFILES


@dataclass(frozen=True)
class Command:
    """One subcommand: its name and help, the options it adds, what it runs, and an optional check that builds
    its config before anything runs (raising ``ValueError``/``KeyError``, reported as one line, exit 2).

    ``options`` names the shared options it takes: ``"common"`` (``--threads``) or ``"study"`` (also
    ``--profile smoke|full``, ``--seeds``, ``--device`` defaulting to the CPU, ``--quiet``).
    """

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]
    check: Callable[[argparse.Namespace], None] | None = None
    options: str = "study"


def seed(text: str) -> int:
    """An argparse type: a seed is an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"seeds are integers >= 0, got {text!r}")
    return value


def threads(text: str) -> int:
    """An argparse type: a number of threads is an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"the number of threads is an integer >= 1, got {text!r}")
    return value


def device(text: str) -> str:
    """An argparse type: a device this machine has (``auto``, ``cpu``, or ``cuda`` where CUDA is available)."""
    try:
        pick_device(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def shared_options() -> dict[str, argparse.ArgumentParser]:
    """The parent parsers of :attr:`Command.options`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=threads, default=None, help="torch CPU threads (default: torch's choice)")
    study = argparse.ArgumentParser(add_help=False, parents=[common])
    study.add_argument("--profile", default="full", choices=PROFILES)
    study.add_argument("--seeds", type=seed, nargs="+", default=None, help="override the profile's seeds")
    study.add_argument("--device", default="cpu", type=device,
                       help="cpu (default; runs are bit-reproducible there) or cuda")
    study.add_argument("--quiet", action="store_true", help="no progress bars")
    return {"common": common, "study": study, "none": argparse.ArgumentParser(add_help=False)}


def error(message: object) -> int:
    """Report a refused command on one line of stderr; the exit status (2, as argparse's own errors)."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def parser(commands: dict[str, Command], *, epilog: str = "") -> argparse.ArgumentParser:
    """The ``python -m amnesiac_paper`` parser: one subcommand per entry of ``commands``."""
    top = argparse.ArgumentParser(prog="python -m amnesiac_paper",
                                  description="The paper's experiments and studies (results are cached under "
                                              "results/).", epilog=epilog,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)
    parents = shared_options()
    for name, cmd in commands.items():
        p = sub.add_parser(name, parents=[parents[cmd.options]], help=cmd.help)
        cmd.arguments(p)
    return top


def run(commands: dict[str, Command], argv: list[str] | None = None, *, epilog: str = "") -> int:
    """Parse ``argv``, set the threads, run the command's check (one ``error:`` line and exit 2 when it refuses),
    then its handler."""
    args = parser(commands, epilog=epilog).parse_args(argv)
    cmd = commands[args.command]
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(args.threads)
    if cmd.check is not None:
        try:
            cmd.check(args)
        except ValueError as err:
            return error(err)
        except KeyError as err:
            return error(err.args[0] if err.args else err)
    return cmd.handler(args)
