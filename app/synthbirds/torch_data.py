"""A torch ``Dataset`` over a seeded split of synthetic birds (rendered on demand)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .dataset import render_sample, sample_seed, sample_species


class SynthBirdsDataset(Dataset):
    """``n`` birds of a seeded split; item ``i`` is ``(image, species)``.

    Args:
        n: Number of samples.
        seed: Dataset seed; with ``split`` it fixes every pixel.
        split: "train", "val" or "test" (independent random streams).
        transform: Applied to the PIL image; default: float tensor (3, H, W) in [0, 1].
        with_masks: Also return the discriminative mask as a bool tensor (H, W).
    """

    def __init__(
        self, n: int, seed: int = 0, split: str = "train", transform=None, with_masks: bool = False
    ):
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n, self.seed, self.split = int(n), int(seed), split
        self.transform = transform
        self.with_masks = with_masks
        sample_seed(seed, split, 0)  # validates split

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if not 0 <= index < self.n:
            raise IndexError(index)
        sample = render_sample(sample_species(index), sample_seed(self.seed, self.split, index))
        if self.transform is not None:
            image = self.transform(sample.image)
        else:
            image = torch.from_numpy(np.asarray(sample.image).copy()).permute(2, 0, 1).float()
            image = image / 255.0
        if self.with_masks:
            return image, sample.species, torch.from_numpy(sample.discriminative_mask.copy())
        return image, sample.species
