"""Models: the seed's SimpleModel and ResNet-18 with GroupNorm (per-sample-gradient friendly).

BatchNorm mixes the samples of a batch in training mode, so a sample's gradient is not defined on its own;
every model here normalises with GroupNorm instead, which acts on one sample at a time.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

MODEL_NAMES = ("simple", "resnet18")
STEMS = ("imagenet", "cifar")


class SimpleModel(nn.Module):
    """The seed's small CNN: two strided 3x3 convolutions, a 2x2 max-pool and a linear classifier.

    As in the seed: padding 1, LeakyReLU(0.1), Xavier-normal weights and zero biases.

    Example:
        >>> model = SimpleModel(in_channels=1, num_classes=10)
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 100):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3, stride=2, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(width, width, kernel_size=3, stride=2, padding=1),
            nn.LeakyReLU(0.1),
            nn.AdaptiveMaxPool2d((2, 2)),
        )
        self.classifier = nn.Linear(width * 4, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))  # [B, classes]


def _groupnorm(num_groups: int):
    def make(channels: int) -> nn.GroupNorm:
        groups = num_groups if num_groups > 0 else _gcd_groups(channels)
        return nn.GroupNorm(groups, channels)

    return make


def _gcd_groups(channels: int) -> int:
    import math

    return math.gcd(32, channels)


def resnet18_gn(
    in_channels: int = 3, num_classes: int = 100, *, stem: str = "imagenet", gn_groups: int = 1
) -> nn.Module:
    """torchvision ResNet-18 with every BatchNorm replaced by GroupNorm.

    Args:
        in_channels: input channels (1 for MNIST, 3 for CIFAR).
        num_classes: output classes.
        stem: ``"imagenet"`` keeps the 7x7 stride-2 convolution and max-pool (as the seed and Graves did);
            ``"cifar"`` uses a 3x3 stride-1 convolution and no max-pool (better for 32x32 inputs, ~10x slower).
        gn_groups: groups per GroupNorm; 1 as in the seed (LayerNorm over channels and space), 0 for
            gcd(32, C) as Opacus does.

    Example:
        >>> resnet18_gn(1, 10)(torch.zeros(1, 1, 28, 28)).shape
        torch.Size([1, 10])
    """
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; valid stems: {', '.join(STEMS)}")
    model = resnet18(weights=None, num_classes=num_classes, norm_layer=_groupnorm(gn_groups))
    if stem == "cifar":
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def build_model(name: str, in_channels: int, num_classes: int, **kwargs) -> nn.Module:
    """Build a model by name (``"simple"`` or ``"resnet18"``); extra keywords go to the constructor."""
    if name == "simple":
        return SimpleModel(in_channels, num_classes, **kwargs)
    if name == "resnet18":
        return resnet18_gn(in_channels, num_classes, **kwargs)
    raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")


