"""amnesiac_paper: the studies, datasets, models, baselines, attacks and book support of the paper
*Per-sample amnesiac unlearning*, built on the :mod:`amnesiac` library (which never imports this package).

Importing it registers the paper's trained baselines (``relabel``, ``finetune``, ``retrain``, ``neggrad_plus``,
``ssd``, ``scrub``) into the library's unlearning registry (:data:`amnesiac.unlearning.METHODS`).

Example:
    >>> import amnesiac, amnesiac_paper
    >>> {"retrain", "scrub"} <= set(amnesiac.unlearning.METHODS)
    True
"""

from . import baselines  # noqa: F401 - registers the trained baselines
from .datasets import (
    DATASETS,
    IN_CHANNELS,
    NUM_CLASSES,
    DatasetUnavailable,
    data_root,
    dataset_available,
    graves_mnist,
    load_dataset,
    set_data_root,
)
from .models import SimpleModel, build_model, resnet18_gn

__all__ = [
    "DATASETS",
    "IN_CHANNELS",
    "NUM_CLASSES",
    "DatasetUnavailable",
    "SimpleModel",
    "build_model",
    "data_root",
    "dataset_available",
    "graves_mnist",
    "load_dataset",
    "resnet18_gn",
    "set_data_root",
]
