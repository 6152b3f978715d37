"""The command line, ``python -m amnesiac_paper COMMAND``: the table of commands; each command's options and
handler live with its study (:class:`amnesiac_paper.cli.Command`).

    python -m amnesiac_paper run EXPERIMENT --profile full --seeds 0 1 2 --device auto
    python -m amnesiac_paper fidelity --profile full --threads 2

Exit status: 0 when the command did its work, 1 when an experiment's data are not available (the reason is on
stderr), 2 when the command line is refused (one ``error:`` line on stderr, before anything runs).
"""

from __future__ import annotations

import sys

from . import bench, cli, comparison, experiments, fidelity, frontier, membership, propagation, regime
from .store import PROFILES

COMMANDS: dict[str, cli.Command] = {c.name: c for c in (
    experiments.RUN_COMMAND, bench.COMMAND, fidelity.COMMAND, propagation.COMMAND, comparison.COMMAND,
    membership.COMMAND, regime.COMMAND, frontier.COMMAND, experiments.LIST_COMMAND)}


def main(argv: list[str] | None = None) -> int:
    exps = "\n  ".join(experiments.EXPERIMENTS)
    return cli.run(COMMANDS, argv, epilog=f"experiments:\n  {exps}\nprofiles: {', '.join(PROFILES)} (smoke: minutes "
                                           "on CPU; full: the seed's scale)")


if __name__ == "__main__":
    sys.exit(main())
