"""Chapter *Method* (``book/method.md``): the settings its memory formulas are evaluated for, and the tiny data
set of its exactness checks."""

from __future__ import annotations

import torch

from amnesiac.data import ArrayDataset

# The seed's two class-forgetting settings as the memory formulas need them: training-set
# size, forget-set size, epochs and batch size. MNIST uses Graves's split: its 60,000 training images minus all
# but the first 100 of the 6,131 threes; CIFAR-100 has 50,000 training images, 500 per class (Krizhevsky 2009).
MEMORY_SETTINGS = {
    "MNIST, forget class 3": dict(dataset="mnist", n_train=60_000 - 6_131 + 100, n_forget=100, epochs=4,
                                  batch_size=64),
    "CIFAR-100, forget class 81": dict(dataset="cifar100", n_train=50_000, n_forget=500, epochs=4, batch_size=64),
}


def toy_dataset(n_samples: int = 48, num_classes: int = 4, *, size: int = 8, noise: float = 1.0,
                seed: int = 0) -> ArrayDataset:
    """A tiny float64 image set for exactness checks: sample ``i`` has label ``i % num_classes`` and its image
    is its class's random prototype plus Gaussian noise of scale ``noise``, [N, 1, size, size]; ids 0..N-1.

    Example:
        >>> ds = toy_dataset(8, 2, seed=0)
        >>> ds.x.shape, ds.x.dtype, ds.y.tolist()
        (torch.Size([8, 1, 8, 8]), torch.float64, [0, 1, 0, 1, 0, 1, 0, 1])
    """
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n_samples) % num_classes  # [N]
    prototypes = torch.randn(num_classes, 1, size, size, generator=gen, dtype=torch.float64)
    x = prototypes[y] + noise * torch.randn(n_samples, 1, size, size, generator=gen, dtype=torch.float64)
    return ArrayDataset(x, y, torch.arange(n_samples), f"toy-seed{seed}")

