"""A small convolutional stem for the demo hybrid ViT (``hybrid_tiny``).

Stages of conv3x3(stride 2)-BN-ReLU, each halving the resolution, so three stages
give a total stride of 8: a 96 px image becomes a 12x12 feature map that timm's
``HybridEmbed`` projects (1x1, patch_size=1) into ViT tokens. Convolutions give the
tiny transformer the locality prior it lacks when trained from scratch on a few
thousand images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ConvBNReLU(nn.Sequential):
    """conv(k x k, stride) -> BatchNorm -> ReLU, 'same'-style padding."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(
                in_chans,
                out_chans,
                kernel_size=kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                bias=False,
            ),
            nn.BatchNorm2d(out_chans),
            nn.ReLU(inplace=True),
        )


class ConvStem(nn.Module):
    """Stacked stride-2 ConvBNReLU stages; output [B, channels[-1], H/2^n, W/2^n].

    ``extra_convs`` stride-1 ConvBNReLU layers follow each downsampling conv
    (0 by default), deepening a stage without changing its resolution.
    """

    def __init__(
        self, channels: Sequence[int] = (32, 64, 128), in_chans: int = 3, extra_convs: int = 0
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("ConvStem needs at least one stage")
        stages = []
        previous = in_chans
        for width in channels:
            layers = [ConvBNReLU(previous, width, stride=2)]
            layers += [ConvBNReLU(width, width, stride=1) for _ in range(extra_convs)]
            stages.append(nn.Sequential(*layers))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.num_features = previous
        self.stride = 2 ** len(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)
