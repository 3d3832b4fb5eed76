"""Learning-rate schedules as multiplicative factors of the base rate, per step."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_factor: float = 0.0) -> float:
    """Linear warm-up from 0 to 1 over ``warmup_steps``, then cosine decay to ``min_factor``."""
    if total_steps <= 0:
        raise ValueError("total_steps must be positive")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def poly(step: int, total_steps: int, power: float = 0.9) -> float:
    """Polynomial decay (1 - step/total)^power, as DeepLab trains."""
    if total_steps <= 0:
        raise ValueError("total_steps must be positive")
    return (1.0 - min(step, total_steps) / total_steps) ** power
