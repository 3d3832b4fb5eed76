"""Feature levels of the fine-tuned ViT classifier: the patch tokens of chosen blocks as maps
on the token grid, plus the outputs of named conv modules (e.g. a hybrid stem's stages).

The AffinityNet (``affinity.net``) and the segmenter on the classifier (``segmenter.net``)
both read their features through ``ViTLevels``; ``section`` names the config keys in errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn


class ViTLevels(nn.Module):
    """Patch tokens of chosen blocks of a timm VisionTransformer, plus named conv taps."""

    def __init__(
        self,
        vit: nn.Module,
        blocks: Sequence[int],
        taps: Sequence[str],
        section: str,
        error: type[ValueError] = ValueError,
    ) -> None:
        super().__init__()
        self.vit = vit
        self.section, self.error = section, error
        depth = len(vit.blocks)
        for b in blocks:
            if not -depth <= b < depth:
                raise error(
                    f"{section}.vit_blocks: block {b} does not exist in a {depth}-block ViT"
                )
        self.blocks = sorted({b % depth for b in blocks})
        names = dict(vit.named_modules())
        for tap in taps:
            if tap not in names or not tap:
                raise error(
                    f"{section}.taps: the classifier has no module '{tap}' (e.g. "
                    "patch_embed.backbone.stages.1 for the hybrid stem's second stage)"
                )
        self.taps = tuple(taps)
        self._tap_modules = [names[tap] for tap in self.taps]

    @contextlib.contextmanager
    def _tapping(self) -> Iterator[dict[str, torch.Tensor]]:
        """Forward hooks on the tapped modules for the time of one forward pass: they keep
        each output in the yielded dict, and their handles are removed on leaving (also on
        error), so the classifier is left without hooks."""
        tapped: dict[str, torch.Tensor] = {}
        handles = [
            module.register_forward_hook(self._keeper(tap, tapped))
            for tap, module in zip(self.taps, self._tap_modules, strict=True)
        ]
        try:
            yield tapped
        finally:
            for handle in handles:
                handle.remove()

    def _keeper(self, name: str, tapped: dict[str, torch.Tensor]):
        def hook(_module, _inputs, output):
            if not isinstance(output, torch.Tensor) or output.ndim != 4:
                raise self.error(
                    f"{self.section}.taps: module '{name}' does not output a [B, C, h, w] map"
                )
            tapped[name] = output

        return hook

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels: list[torch.Tensor] = []
        with self._tapping() as tapped:
            if self.blocks:
                levels = self.vit.forward_intermediates(
                    x, indices=self.blocks, norm=True, stop_early=True, intermediates_only=True,
                    output_fmt="NCHW",
                )  # fmt: skip
            else:
                self.vit.patch_embed(x)  # the taps all sit in the patch embedding
        return [tapped[tap] for tap in self.taps] + list(levels)
