"""Deep supervision of a hybrid classifier's convolutional stem (``classifier.stem_loss``).

Trained from scratch, a hybrid ViT learns slowly: the only gradient its stem gets passes
through transformer blocks that start out random, and a CLS token that has yet to learn
where to look. An auxiliary linear head on the stem's globally average-pooled features,
trained with the same multi-label loss, gives the stem a short path to the labels (deep
supervision: Lee et al., AISTATS 2015; GoogLeNet's auxiliary classifiers). The head lives
only while training: the saved classifier, its relevance maps and every later stage are
those of the plain model.

    loss = BCE(head(CLS token), y) + stem_loss * BCE(aux_head(mean_hw stem(x)), y)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class StemSupervisionError(ValueError):
    """classifier.stem_loss asks for a stem the classifier does not have."""


def stem_of(classifier: nn.Module) -> tuple[nn.Module, int]:
    """The convolutional stem of a hybrid ViT (timm ``HybridEmbed.backbone``) and the
    channels of the feature map it hands to the token projection."""
    embed = getattr(classifier, "patch_embed", None)
    stem = getattr(embed, "backbone", None)
    proj = getattr(embed, "proj", None)
    if stem is None or not isinstance(proj, nn.Conv2d):
        raise StemSupervisionError(
            "classifier.stem_loss needs a hybrid backbone with a convolutional stem "
            "(hybrid_tiny, vit_*_r*); set it to 0 for a plain ViT"
        )
    return stem, proj.in_channels


def multilabel_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Binary cross-entropy with logits, mean over images and classes."""
    return F.binary_cross_entropy_with_logits(logits, targets)


class StemSupervised(nn.Module):
    """A hybrid classifier plus an auxiliary head on its pooled stem features, for training.

    ``forward`` returns the classifier's logits and the auxiliary logits; ``loss`` the
    weighted sum of their multi-label losses. Parameter names are the classifier's under
    ``classifier.`` and the auxiliary head's under ``aux_head.``.
    """

    head_prefixes = ("classifier.head.", "aux_head.")

    def __init__(self, classifier: nn.Module, weight: float) -> None:
        super().__init__()
        if weight <= 0:
            raise StemSupervisionError(f"classifier.stem_loss must be positive here, got {weight}")
        _, channels = stem_of(classifier)
        self.classifier = classifier
        self.aux_head = nn.Linear(channels, classifier.num_classes)
        self.weight = float(weight)

    def no_weight_decay(self) -> set[str]:
        """The classifier's undecayed parameters (position embedding, CLS token), prefixed."""
        inner = getattr(self.classifier, "no_weight_decay", lambda: set())()
        return {f"classifier.{name}" for name in inner}

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        stem, _ = stem_of(self.classifier)
        pooled: list[Tensor] = []

        def keep(_module: nn.Module, _inputs: object, output: Tensor | tuple) -> None:
            features = output[-1] if isinstance(output, list | tuple) else output
            pooled.append(features.mean(dim=(2, 3)))

        handle = stem.register_forward_hook(keep)
        try:
            logits = self.classifier(images)
        finally:
            handle.remove()
        return logits, self.aux_head(pooled[-1])

    def loss(self, images: Tensor, targets: Tensor) -> Tensor:
        logits, aux_logits = self(images)
        return multilabel_loss(logits, targets) + self.weight * multilabel_loss(aux_logits, targets)


def trainee(classifier: nn.Module, stem_loss: float) -> nn.Module:
    """What the optimiser trains: the classifier, wrapped in ``StemSupervised`` when
    ``stem_loss`` > 0."""
    return StemSupervised(classifier, stem_loss) if stem_loss > 0 else classifier


def training_loss(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    """The loss a training step minimises for ``model`` (a classifier or a trainee)."""
    if isinstance(model, StemSupervised):
        return model.loss(images, targets)
    return multilabel_loss(model(images), targets)
