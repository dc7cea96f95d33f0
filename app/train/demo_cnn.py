"""Train the demo CNN (a small torchvision ResNet) on synthetic birds.

    python -m app.train.demo_cnn --steps 600 --seed 0 --out assets/demo

Trains on a seeded pool of rendered birds (cached under ``runs/pools``, shared with the other
training scripts) with random flips, and genus-aware soft targets (``--genus-smoothing`` of the
mass on the three genus-mates, ``--label-smoothing`` on all classes) so the closest logits are
look-alikes. Deterministic for a seed and thread count. Writes ``demo-cnn.safetensors`` and
``demo-cnn.json`` (labels, widths, normalisation, measured held-out accuracy and genus-mate
rate of the closest logits) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from app.models.zoo.demo_assets import DEMO_DIR
from app.models.zoo.demo_cnn import DEFAULT_BLOCKS, DEFAULT_WIDTHS, DemoResNet
from app.synthbirds import IMAGE_SIZE, NUM_SPECIES, SPECIES_NAMES, render_batch
from app.train.demo_common import (
    POOL_DIR,
    epoch_batches,
    flip_half,
    genus_mate_rate,
    genus_soft_targets,
    rendered_pool,
    seed_everything,
    to_tensor,
    warmup_cosine,
)


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 1]."""
    x = np.asarray(images).reshape(-1, 3).astype(np.float64) / 255.0
    return x.mean(0).round(4).tolist(), x.std(0).round(4).tolist()


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * logits.log_softmax(dim=1)).sum(dim=1).mean()


@torch.no_grad()
def evaluate(
    model: nn.Module, n: int, seed: int, mean, std, split: str = "test", batch_size: int = 100
) -> dict[str, float]:
    """Accuracy and genus-mate rate of the 3 closest logits on the first ``n`` samples of a
    seeded split."""
    model.eval()
    logits, labels = [], []
    for start in range(0, n, batch_size):
        images, y = render_batch(range(start, min(n, start + batch_size)), seed, split)
        logits.append(model(to_tensor(images, mean, std)))
        labels.append(torch.from_numpy(y))
    logits, labels = torch.cat(logits), torch.cat(labels)
    return {
        "test_accuracy": float((logits.argmax(1) == labels).float().mean()),
        "genus_mate_rate_top3": genus_mate_rate(logits, labels, 3),
        "genus_mate_rate_top1": genus_mate_rate(logits, labels, 1),
    }


def add_common_arguments(
    parser: argparse.ArgumentParser, steps: int, lr: float, weight_decay: float
) -> None:
    """Arguments shared by the classifier trainers."""
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--weight-decay", type=float, default=weight_decay)
    parser.add_argument("--label-smoothing", type=float, default=0.05)
    parser.add_argument("--genus-smoothing", type=float, default=0.10)
    parser.add_argument("--pool", type=int, default=9600, help="rendered training images")
    parser.add_argument(
        "--pool-cache",
        type=Path,
        default=POOL_DIR,
        help="folder caching rendered pools (shared by the trainers)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-seed", type=int, default=1234)
    parser.add_argument("--test-size", type=int, default=960)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEMO_DIR)
    parser.add_argument("--no-progress", action="store_true")


def fit(
    model: nn.Module, args, name: str, optimizer=None, frozen: nn.Module | None = None
) -> tuple[list, list, float]:
    """Train ``model`` on the pool (``frozen``: a part kept in eval mode); returns (mean, std,
    seconds)."""
    started = time.time()
    images, labels = rendered_pool(args.pool, args.seed, "train", args.threads, args.pool_cache)
    mean, std = channel_stats(images[:2000])
    optimizer = optimizer or torch.optim.AdamW(
        model.parameters(), lr=args.lr, weight_decay=args.weight_decay
    )
    warmup = max(1, args.steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, args.steps, warmup)
    )
    bar = tqdm(
        epoch_batches(len(labels), args.batch_size, args.steps, args.seed),
        total=args.steps,
        desc=name,
        disable=args.no_progress,
        mininterval=10,
    )
    running = None
    model.train()
    if frozen is not None:
        frozen.eval()
    for index, rng in bar:
        x = flip_half(to_tensor(images[index], mean, std), rng)
        y = torch.from_numpy(labels[index])
        logits = model(x)
        loss = soft_cross_entropy(
            logits, genus_soft_targets(y, args.label_smoothing, args.genus_smoothing)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        acc = (logits.argmax(1) == y).float().mean().item()
        running = (
            (loss.item(), acc)
            if running is None
            else (0.95 * running[0] + 0.05 * loss.item(), 0.95 * running[1] + 0.05 * acc)
        )
        bar.set_postfix(loss=f"{running[0]:.3f}", acc=f"{running[1]:.3f}")
    return mean, std, time.time() - started


def train_record(args, seconds: float, module: str, argv) -> dict:
    return {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "label_smoothing": args.label_smoothing,
        "genus_smoothing": args.genus_smoothing,
        "pool": args.pool,
        "seed": args.seed,
        "threads": args.threads,
        "seconds": round(seconds),
        "command": f"python -m {module} " + " ".join(argv or sys.argv[1:]),
    }


def save(model: nn.Module, out: Path, name: str, meta: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / f"{name}.safetensors"))
    (out / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    logging.getLogger(__name__).info("wrote %s/%s.safetensors and .json", out, name)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, steps=600, lr=3e-3, weight_decay=5e-4)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    seed_everything(args.seed, args.threads)
    model = DemoResNet(NUM_SPECIES, DEFAULT_WIDTHS, DEFAULT_BLOCKS)
    mean, std, seconds = fit(model, args, "demo-cnn")
    metrics = evaluate(model, args.test_size, args.test_seed, mean, std)
    print(
        f"{metrics} on {args.test_size} held-out images (split 'test', seed "
        f"{args.test_seed}); training took {seconds:.0f} s",
        flush=True,
    )
    meta = {
        "name": "demo-cnn",
        "labels": list(SPECIES_NAMES),
        "widths": list(DEFAULT_WIDTHS),
        "blocks": list(DEFAULT_BLOCKS),
        "image_size": IMAGE_SIZE,
        "mean": mean,
        "std": std,
        "target_layer": "layer4",
        **metrics,
        "test_size": args.test_size,
        "test_split": "test",
        "test_seed": args.test_seed,
        "train": train_record(args, seconds, "app.train.demo_cnn", argv),
    }
    save(model, args.out, "demo-cnn", meta)
    return meta


if __name__ == "__main__":
    main()
