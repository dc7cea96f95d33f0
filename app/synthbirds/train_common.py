"""Bits shared by the two training scripts."""

from __future__ import annotations

import math
import random

import numpy as np
import torch


def seed_everything(seed: int, threads: int | None) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)


def to_tensor(images: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warm-up then cosine decay to 2% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def batch_indices(step: int, batch_size: int) -> range:
    """Training sample indices of a step: fresh samples every step (data made on the fly)."""
    return range(step * batch_size, (step + 1) * batch_size)
