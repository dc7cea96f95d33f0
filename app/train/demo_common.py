"""Bits shared by the training scripts: seeding, a rendered training pool, batches, targets."""

from __future__ import annotations

import logging
import math
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from app.models.zoo.demo_assets import REPO_ROOT
from app.synthbirds.dataset import render_batch
from app.synthbirds.species import MEMBERS_PER_GROUP, NUM_SPECIES

log = logging.getLogger(__name__)

#: Rendered pools are cached here (gitignored), so the three trainings render them once.
POOL_DIR = REPO_ROOT / "runs" / "pools"


def seed_everything(seed: int, threads: int | None) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)


def to_tensor(images: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warm-up then cosine decay to 2% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _render_chunk(args: tuple[int, int, int, str]) -> tuple[np.ndarray, np.ndarray]:
    start, stop, seed, split = args
    return render_batch(range(start, stop), seed, split)


def rendered_pool(
    n: int, seed: int, split: str = "train", workers: int = 2, cache: Path | None = POOL_DIR
) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``0 .. n-1`` of a seeded split as uint8 images (N, H, W, 3) and labels (N,).

    Rendered once in ``workers`` processes and cached as ``.npy`` under ``cache`` (the pixels
    are a pure function of (seed, split, index), so the cache never goes stale).
    """
    path = None if cache is None else Path(cache) / f"{split}-seed{seed}-n{n}.npy"
    labels = np.arange(n, dtype=np.int64) % NUM_SPECIES
    if path is not None and path.is_file():
        return np.load(path, mmap_mode="r"), labels
    chunk = 500
    jobs = [(s, min(n, s + chunk), seed, split) for s in range(0, n, chunk)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(_render_chunk, jobs))
    images = np.concatenate([p[0] for p in parts])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, images)
        log.info("cached %d rendered images in %s", n, path)
    return images, labels


def epoch_batches(n: int, batch_size: int, steps: int, seed: int):
    """``steps`` index batches over a pool of ``n``: a fresh seeded permutation every epoch."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    order: list[int] = []
    for _ in range(steps):
        while len(order) < batch_size:
            order.extend(rng.permutation(n).tolist())
        batch, order = order[:batch_size], order[batch_size:]
        yield np.sort(np.asarray(batch)), rng


def flip_half(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Mirror a random half of an image batch (N, 3, H, W) left-right."""
    flip = torch.from_numpy(rng.random(x.shape[0]) < 0.5)
    x = x.clone()
    x[flip] = x[flip].flip(-1)
    return x


def genus_soft_targets(labels: torch.Tensor, smoothing: float, genus: float) -> torch.Tensor:
    """Soft targets: ``genus`` of the mass spread over the genus-mates, ``smoothing`` over all
    classes, the rest on the true class. Teaches logits to rank look-alikes next, as real
    fine-grained models do (and as Finer-CAM's closest-logit references assume)."""
    n = labels.shape[0]
    target = torch.full((n, NUM_SPECIES), smoothing / NUM_SPECIES)
    first = (labels // MEMBERS_PER_GROUP) * MEMBERS_PER_GROUP
    for offset in range(MEMBERS_PER_GROUP):
        target[torch.arange(n), first + offset] += genus / (MEMBERS_PER_GROUP - 1)
    target[torch.arange(n), labels] += 1.0 - smoothing - genus - genus / (MEMBERS_PER_GROUP - 1)
    return target


def genus_mate_rate(logits: torch.Tensor, labels: torch.Tensor, top_t: int = 3) -> float:
    """Share of the ``top_t`` closest logits (target excluded) that are genus-mates."""
    masked = logits.clone()
    masked[torch.arange(len(labels)), labels] = float("-inf")
    refs = masked.topk(top_t, dim=1).indices
    same = (refs // MEMBERS_PER_GROUP) == (labels // MEMBERS_PER_GROUP)[:, None]
    return float(same.float().mean())
