"""The paper's datasets: MNIST and CIFAR-100 loaded through torchvision as :class:`amnesiac.ArrayDataset`
(in-memory tensors with explicit sample ids), the data root, and the Graves/seed MNIST setting.

The data root is ``$AMNESIAC_DATA`` if set, else :func:`set_data_root`, else ``data/`` at the repository root;
it uses torchvision's layout (``MNIST/raw/...``, ``cifar-100-python/...``). Missing data are downloaded by
torchvision when the network allows; otherwise :class:`DatasetUnavailable` says what is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from amnesiac.data import ArrayDataset, _check_class, class_ids

DATASETS = ("mnist", "cifar100")


NUM_CLASSES = {"mnist": 10, "cifar100": 100}


IN_CHANNELS = {"mnist": 1, "cifar100": 3}


_DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "data"


_root_override: Path | None = None


class DatasetUnavailable(RuntimeError):
    """The dataset's files are not under the data root and could not be downloaded."""


def set_data_root(path: str | os.PathLike | None) -> None:
    """Set the data root for this process (``None`` restores the default); ``$AMNESIAC_DATA`` wins."""
    global _root_override
    _root_override = None if path is None else Path(path)


def data_root() -> Path:
    """The folder holding the torchvision dataset folders."""
    env = os.environ.get("AMNESIAC_DATA")
    if env:
        return Path(env)
    return _root_override if _root_override is not None else _DEFAULT_ROOT


def load_dataset(
    name: str, split: str = "train", *, root: str | os.PathLike | None = None, download: bool = True
) -> ArrayDataset:
    """Load MNIST or CIFAR-100 through torchvision into memory, normalised with mean 0.5 and std 0.5.

    Args:
        name: ``"mnist"`` or ``"cifar100"``.
        split: ``"train"`` or ``"test"``.
        root: data root; defaults to :func:`data_root`.
        download: let torchvision download missing files (needs the network).

    Raises:
        DatasetUnavailable: the files are missing and could not be downloaded.
    """
    from torchvision import datasets

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; valid splits: train, test")
    root = Path(root) if root is not None else data_root()
    cls = {"mnist": datasets.MNIST, "cifar100": datasets.CIFAR100}[name]
    try:
        try:
            base = cls(str(root), train=split == "train", download=False)
        except RuntimeError:
            if not download:
                raise
            base = cls(str(root), train=split == "train", download=True)
    except Exception as err:  # network errors come in many types
        raise DatasetUnavailable(
            f"{name} ({split}) is not available under {root} and could not be downloaded ({err}). "
            f"Put torchvision's files there or point $AMNESIAC_DATA at a folder that has them."
        ) from err
    data = torch.as_tensor(np.asarray(base.data))
    if data.ndim == 3:  # MNIST [N, H, W]
        data = data.unsqueeze(1)
    else:  # CIFAR [N, H, W, C]
        data = data.permute(0, 3, 1, 2)
    x = (data.float() / 255.0 - 0.5) / 0.5  # [N, C, H, W] in [-1, 1]
    y = torch.as_tensor(np.asarray(base.targets), dtype=torch.long)
    return ArrayDataset(x.contiguous(), y, torch.arange(len(y)), f"{name}-{split}")


def dataset_available(name: str, *, root: str | os.PathLike | None = None) -> bool:
    """Whether both splits of the dataset load from the data root without a download."""
    try:
        load_dataset(name, "test", root=root, download=False)
        load_dataset(name, "train", root=root, download=False)
    except DatasetUnavailable:
        return False
    return True


def graves_mnist(train: ArrayDataset, *, forget_class: int = 3, keep: int = 100) -> ArrayDataset:
    """The Graves/seed MNIST setting: every training image not of ``forget_class`` plus only its first ``keep``."""
    _check_class(train, forget_class)
    ids = class_ids(train, forget_class)
    dropped = ids[keep:]
    return train.without(dropped, name=f"{train.name}-graves{forget_class}x{keep}")
