"""Train the demo CNN on synthetic birds.

    python -m app.synthbirds.train_cnn --steps 400 --seed 0 --out assets/demo

Data is rendered on the fly (every step sees new birds), so the run is deterministic for a
seed and thread count. Writes ``demo-cnn.safetensors`` and ``demo-cnn.json`` (labels, layout,
image size, normalisation, measured test accuracy) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from app.models.demo_assets import DEMO_DIR
from app.models.demo_cnn import DEFAULT_LAYOUT, DemoCNN

from . import IMAGE_SIZE, NUM_SPECIES, SPECIES_NAMES, render_batch
from .train_common import batch_indices, seed_everything, to_tensor, warmup_cosine


def channel_stats(seed: int, n: int = 512) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``n`` training images (in [0, 1])."""
    images, _ = render_batch(range(n), seed, "train")
    x = images.reshape(-1, 3).astype(np.float64) / 255.0
    return x.mean(0).round(4).tolist(), x.std(0).round(4).tolist()


def train_step(model: DemoCNN, optimizer, images: np.ndarray, labels: np.ndarray, mean, std
               ) -> tuple[float, float]:
    """One optimisation step on a uint8 batch; returns (loss, batch accuracy)."""
    model.train()
    x = to_tensor(images, mean, std)
    y = torch.from_numpy(labels)
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y, label_smoothing=0.05)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item(), (logits.argmax(1) == y).float().mean().item()


@torch.no_grad()
def evaluate(model: DemoCNN, n: int, seed: int, mean, std, split: str = "test",
             batch_size: int = 100) -> float:
    """Accuracy on the first ``n`` samples of a seeded split."""
    model.eval()
    correct = 0
    for start in range(0, n, batch_size):
        images, labels = render_batch(range(start, min(n, start + batch_size)), seed, split)
        logits = model(to_tensor(images, mean, std))
        correct += int((logits.argmax(1) == torch.from_numpy(labels)).sum())
    return correct / max(n, 1)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float):
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-seed", type=int, default=1234)
    parser.add_argument("--test-size", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEMO_DIR)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    seed_everything(args.seed, args.threads)
    started = time.time()
    mean, std = channel_stats(args.seed)
    model = DemoCNN(NUM_SPECIES, DEFAULT_LAYOUT)
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    warmup = max(1, args.steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, args.steps, warmup)
    )
    bar = tqdm(range(args.steps), desc="demo-cnn", disable=args.no_progress, mininterval=5)
    running = None
    for step in bar:
        images, labels = render_batch(batch_indices(step, args.batch_size), args.seed, "train")
        loss, acc = train_step(model, optimizer, images, labels, mean, std)
        scheduler.step()
        running = (loss, acc) if running is None else (
            0.95 * running[0] + 0.05 * loss, 0.95 * running[1] + 0.05 * acc)
        bar.set_postfix(loss=f"{running[0]:.3f}", acc=f"{running[1]:.3f}")
    train_seconds = time.time() - started

    accuracy = evaluate(model, args.test_size, args.test_seed, mean, std)
    print(f"test accuracy: {accuracy:.4f} on {args.test_size} held-out images "
          f"(split 'test', seed {args.test_seed}); training took {train_seconds:.0f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out / "demo-cnn.safetensors"))
    meta = {
        "name": "demo-cnn",
        "labels": list(SPECIES_NAMES),
        "layout": list(DEFAULT_LAYOUT),
        "image_size": IMAGE_SIZE,
        "mean": mean,
        "std": std,
        "target_layer": "features[-1]",
        "test_accuracy": accuracy,
        "test_size": args.test_size,
        "test_split": "test",
        "test_seed": args.test_seed,
        "train": {
            "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
            "weight_decay": args.weight_decay, "seed": args.seed, "threads": args.threads,
            "seconds": round(train_seconds),
            "command": "python -m app.synthbirds.train_cnn " + " ".join(argv or sys.argv[1:]),
        },
    }
    (args.out / "demo-cnn.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out / 'demo-cnn.safetensors'} and {args.out / 'demo-cnn.json'}")
    return meta


if __name__ == "__main__":
    main()
