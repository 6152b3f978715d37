"""Published numbers the book quotes beside its own (never computed here): the seed report's tables (chapters
*Reproducing the seed on MNIST* and *CIFAR-100*, and the *Discussion*), Graves et al.'s membership-attack recall, and
the NeurIPS 2023 unlearning challenge's starting-kit figures (chapter *Forgetting samples on MNIST*)."""

from __future__ import annotations

from .common import markdown_table

# The seed report's published MNIST and CIFAR-100 tables (Marincione 2024): accuracy
# on the forgotten class / on the rest after training, right after unlearning ("no retrain") and after 4 epochs of
# training on the remaining data ("after retrain"). Quoted for comparison; every other number is computed.
SEED_REPORT = {
    "mnist-class3-simple": [
        ("Original (per-batch)", (.67, .98), (.00, .83), (.00, .98)),
        ("Layer p=0.1", (.56, .98), (.07, .98), (.02, .98)),
        ("Per-sample p=0.1 (seed)", (.60, .98), (.00, .83), (.04, .98)),
        ("Per-sample p=0.075 (seed)", (.63, .98), (.03, .96), (.03, .98)),
        ("Per-sample p=0.05 (seed)", (.60, .98), (.06, .96), (.04, .98)),
        ("Per-sample p=0.01 (seed)", (.57, .98), (.52, .98), (.04, .98)),
    ],
    "mnist-class3-resnet18": [
        ("Original (per-batch)", (.78, .99), (.00, .97), (.00, .99)),
        ("Layer p=0.1", (.83, .99), (.69, .99), (.00, .99)),
        ("Per-sample p=0.2 (seed)", (.81, .99), (.24, .97), (.00, .99)),
        ("Per-sample p=0.1 (seed)", (.85, .98), (.73, .97), (.00, .99)),
        ("Per-sample p=0.075 (seed)", (.83, .98), (.77, .98), (.02, .99)),
    ],
    "cifar100-class81-simple": [
        ("Original (per-batch)", (.17, .33), (.00, .04), (.00, .35)),
        ("Layer p=0.1", (.19, .33), (.00, .32), (.00, .35)),
        ("Per-sample p=0.1 (seed)", (.24, .33), (.00, .14), (.00, .36)),
        ("Per-sample p=0.075 (seed)", (.23, .33), (.00, .19), (.00, .36)),
        ("Per-sample p=0.05 (seed)", (.22, .33), (.00, .23), (.00, .36)),
        ("Per-sample p=0.01 (seed)", (.24, .33), (.04, .32), (.00, .36)),
    ],
    # Original and Layer were summed into one tensor to fit memory (as the report says).
    "cifar100-class81-resnet18": [
        ("Original (per-batch)", (.18, .33), (.00, .02), (.00, .41)),
        ("Layer p=0.1", (.12, .32), (.00, .30), (.00, .39)),
        ("Per-sample p=0.1 (seed)", (.21, .33), (.00, .17), (.00, .41)),
        ("Per-sample p=0.075 (seed)", (.16, .34), (.00, .23), (.00, .40)),
        ("Per-sample p=0.05 (seed)", (.15, .33), (.00, .30), (.00, .40)),
        ("Per-sample p=0.025 (seed)", (.22, .33), (.01, .31), (.00, .40)),
        ("Per-sample p=0.01 (seed)", (.18, .33), (.11, .33), (.00, .40)),
    ],
}


SEED_REPORT_REPAIR_EPOCHS = 4  # the seed report's "after retrain": 4 further epochs on the remaining data


# Graves et al. (AAAI 2021): recall of their Shokri-style membership inference attack on
# CIFAR-100 (forgetting class 11) before and right after amnesiac unlearning. Quoted, not computed here.
GRAVES_REPORT = {"mia_recall_before": 0.975, "mia_recall_after": 0.0, "mia_dataset": "CIFAR-100", "mia_class": 11}


# Published reference figures of the NeurIPS 2023 Machine Unlearning Challenge starting kit (Triantafillou et al.
# 2024): CIFAR-10, ResNet-18, a random 10% forget set. Test accuracy and loss-MIA accuracy
# (forget vs test losses, 10-fold logistic regression; 0.5 = indistinguishable). Quoted, not computed here.
STARTING_KIT = {
    "Original model": {"acc_test": .883, "mia_loss": .579},
    "Fine-tune on the retain set (5 epochs)": {"acc_test": .840, "mia_loss": .512},
    "Retrain from scratch": {"acc_test": .88, "mia_loss": .502},
}


def seed_report_table(name: str) -> str:
    """The seed report's published table for an experiment (``SEED_REPORT[name]``) as Markdown: accuracy on
    the forgotten class / on the rest after training, right after unlearning and after 4 epochs of repair.

    Example:
        >>> seed_report_table("mnist-class3-simple").splitlines()[0]
        '| method (seed report) | after training | no retrain | after retrain |'
    """
    if name not in SEED_REPORT:
        raise ValueError(f"the seed report has no table for {name!r}; it has: {', '.join(SEED_REPORT)}")
    rows = [[label] + [f"{f:.2f} / {r:.2f}" for f, r in cells] for label, *cells in SEED_REPORT[name]]
    return markdown_table(["method (seed report)", "after training", "no retrain", "after retrain"], rows)

