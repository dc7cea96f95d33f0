"""Train a linear classification head on a frozen backbone (for ``cub200-linear``).

    python -m app.train.head --data /data/CUB_200_2011 --out heads/cub-dinov2 \\
        --backbone timm:vit_base_patch14_dinov2.lvd142m

``--data`` is a ``CUB_200_2011`` folder (uses its own ``train_test_split.txt``; class names
cleaned from ``classes.txt``) or any ImageFolder: ``DATA/train/<class>/*`` with ``DATA/val`` or
``DATA/test``, or just ``DATA/<class>/*`` (then a stratified ``--val-fraction`` is held out).

Images go through the backbone's own preprocessing (the whole image resized to its input size,
as the app does), features are extracted once without autograd, and a linear layer is fitted
on standardised features with AdamW (the standardisation is folded into the saved weights).
Writes ``head.safetensors`` (weights + metadata naming the backbone and input size),
``classes.json`` and ``report.json`` (train/test top-1, top-5 and per-class accuracy) into
``--out``. Point ``FINERCAM_CUB_HEAD`` at the folder to use it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from app.config import Settings, resolve_device
from app.models.adapters.backbones import Backbone, build_backbone
from app.models.adapters.linear_head import save_head
from app.models.zoo.cub import clean_cub_name

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
DEFAULT_BACKBONE = "timm:vit_base_patch14_dinov2.lvd142m"


@dataclass
class Split:
    """Image paths and integer labels of one split."""

    paths: list[Path]
    labels: list[int]


@dataclass
class Dataset:
    kind: str
    classes: list[str]
    train: Split
    test: Split


# --------------------------------------------------------------------------- data


def _find_cub_root(data: Path) -> Path | None:
    for candidate in (data, data / "CUB_200_2011"):
        if all(
            (candidate / f).is_file()
            for f in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
        ):
            return candidate
    return None


def load_cub(root: Path, limit_per_class: int | None = None) -> Dataset:
    """CUB_200_2011 with its official train/test split."""

    def table(name: str) -> dict[str, str]:
        rows = {}
        for line in (root / name).read_text().splitlines():
            if line.strip():
                key, _, value = line.strip().partition(" ")
                rows[key] = value.strip()
        return rows

    classes_raw = table("classes.txt")
    class_ids = sorted(classes_raw, key=int)
    classes = [clean_cub_name(classes_raw[c]) for c in class_ids]
    index_of = {c: i for i, c in enumerate(class_ids)}
    images, labels, is_train = (
        table("images.txt"),
        table("image_class_labels.txt"),
        table("train_test_split.txt"),
    )
    train, test = Split([], []), Split([], [])
    counts: dict[tuple[bool, int], int] = {}
    for image_id in sorted(images, key=int):
        label = index_of[labels[image_id]]
        training = is_train.get(image_id, "0") == "1"
        key = (training, label)
        if limit_per_class is not None and counts.get(key, 0) >= limit_per_class:
            continue
        counts[key] = counts.get(key, 0) + 1
        split = train if training else test
        split.paths.append(root / "images" / images[image_id])
        split.labels.append(label)
    return Dataset("CUB_200_2011", classes, train, test)


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _split_from(folder: Path, classes: list[str], limit: int | None) -> Split:
    split = Split([], [])
    for label, name in enumerate(classes):
        class_dir = folder / name
        paths = _images_in(class_dir) if class_dir.is_dir() else []
        paths = paths[:limit] if limit is not None else paths
        split.paths += paths
        split.labels += [label] * len(paths)
    return split


def load_image_folder(
    data: Path, val_fraction: float = 0.2, seed: int = 0, limit_per_class: int | None = None
) -> Dataset:
    """An ImageFolder with train/ + val|test/, or class folders split by ``val_fraction``."""
    held_out = next((data / n for n in ("val", "test") if (data / n).is_dir()), None)
    if (data / "train").is_dir() and held_out is not None:
        classes = [p.name for p in _class_folders(data / "train")]
        return Dataset(
            "ImageFolder",
            _display_names(classes),
            _split_from(data / "train", classes, limit_per_class),
            _split_from(held_out, classes, limit_per_class),
        )
    class_dirs = _class_folders(data)
    if not class_dirs:
        raise ValueError(f"{data} has no class folders (expected DATA/<class>/<image>)")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError("--val-fraction must be between 0 and 1")
    rng = random.Random(seed)
    train, test = Split([], []), Split([], [])
    for label, class_dir in enumerate(class_dirs):
        paths = _images_in(class_dir)
        rng.shuffle(paths)
        if limit_per_class is not None:
            paths = paths[: 2 * limit_per_class]
        n_test = max(1, round(len(paths) * val_fraction)) if len(paths) > 1 else 0
        test.paths += paths[:n_test]
        test.labels += [label] * n_test
        train.paths += paths[n_test:]
        train.labels += [label] * (len(paths) - n_test)
    return Dataset("ImageFolder", _display_names([p.name for p in class_dirs]), train, test)


def _display_names(folders: list[str]) -> list[str]:
    """CUB-style folder names (``001.Black_footed_Albatross``) are cleaned; others kept."""
    if folders and all(name[:3].isdigit() and name[3:4] == "." for name in folders):
        return [clean_cub_name(name) for name in folders]
    return folders


def load_dataset(data: Path, val_fraction: float, seed: int, limit: int | None) -> Dataset:
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data} is not a folder")
    root = _find_cub_root(data)
    dataset = load_cub(root, limit) if root else load_image_folder(data, val_fraction, seed, limit)
    if not dataset.train.paths:
        raise ValueError(f"no training images found under {data}")
    return dataset


# --------------------------------------------------------------------------- features


@torch.no_grad()
def extract_features(
    backbone: Backbone, paths: list[Path], batch_size: int, desc: str
) -> torch.Tensor:
    """``(N, D)`` float32 CPU features, as the adapter computes them (whole image resized)."""
    chunks = []
    with tqdm(total=len(paths), desc=desc, unit="img", file=sys.stderr) as bar:
        for start in range(0, len(paths), batch_size):
            batch = []
            for path in paths[start : start + batch_size]:
                with Image.open(path) as image:
                    batch.append(backbone.preprocess(image.convert("RGB")))
            features = backbone.features(backbone.trunk(torch.cat(batch))).float()
            if backbone.normalize_features:
                features = F.normalize(features, dim=-1)
            chunks.append(features.cpu())
            bar.update(len(batch))
    if not chunks:
        return torch.zeros(0, backbone.feature_dim)
    return torch.cat(chunks)


# --------------------------------------------------------------------------- training


def fit_linear(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """AdamW on standardised features; returns (weight, bias) for the raw features."""
    generator = torch.Generator().manual_seed(seed)
    mean = features.mean(0)
    std = features.std(0, unbiased=False).clamp_min(1e-6)
    z = (features - mean) / std
    layer = torch.nn.Linear(features.shape[1], num_classes)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, math.ceil(len(z) / batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    with tqdm(range(epochs), desc="train head", unit="epoch", file=sys.stderr) as bar:
        for _ in bar:
            order = torch.randperm(len(z), generator=generator)
            total = 0.0
            for start in range(0, len(z), batch_size):
                idx = order[start : start + batch_size]
                loss = F.cross_entropy(layer(z[idx]), labels[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += float(loss.detach()) * len(idx)
            bar.set_postfix(loss=f"{total / len(z):.4f}")
    with torch.no_grad():
        weight = layer.weight / std
        bias = layer.bias - weight @ mean
    return weight.detach(), bias.detach()


def accuracy_report(
    logits: torch.Tensor, labels: torch.Tensor, classes: list[str]
) -> dict[str, object]:
    """Top-1, top-5 and per-class accuracy."""
    if len(labels) == 0:
        return {"images": 0, "top1": None, "top5": None, "per_class": {}}
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    top1 = (top[:, 0] == labels).float()
    top5 = (top == labels[:, None]).any(1).float()
    per_class = {}
    for index, name in enumerate(classes):
        mask = labels == index
        if mask.any():
            per_class[name] = round(float(top1[mask].mean()), 4)
    return {
        "images": int(len(labels)),
        "top1": round(float(top1.mean()), 4),
        "top5": round(float(top5.mean()), 4),
        "per_class": per_class,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.train.head", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="CUB_200_2011 folder or an ImageFolder"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--backbone",
        default=DEFAULT_BACKBONE,
        help="clip | demo-tinyclip | open_clip:NAME[@PRETRAINED] | "
        "timm:NAME[@WEIGHTS] (default: %(default)s)",
    )
    parser.add_argument(
        "--input-size", type=int, default=None, help="input side for timm backbones (default 224)"
    )
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32, help="feature extraction batch")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="held out per class when the ImageFolder has no val/test split",
    )
    parser.add_argument(
        "--limit-per-class",
        type=int,
        default=None,
        help="use at most N images per class and split (quick runs)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    started = time.time()
    dataset = load_dataset(args.data, args.val_fraction, args.seed, args.limit_per_class)
    log.info(
        "%s: %d classes, %d train / %d test images",
        dataset.kind,
        len(dataset.classes),
        len(dataset.train.paths),
        len(dataset.test.paths),
    )
    device = resolve_device(args.device)
    backbone = build_backbone(args.backbone, device, Settings.from_env(), args.input_size)
    log.info("backbone: %s (input %dx%d)", backbone.description, *backbone.input_size)
    train_x = extract_features(backbone, dataset.train.paths, args.batch_size, "features train")
    test_x = extract_features(backbone, dataset.test.paths, args.batch_size, "features test")
    train_y = torch.tensor(dataset.train.labels, dtype=torch.long)
    test_y = torch.tensor(dataset.test.labels, dtype=torch.long)
    weight, bias = fit_linear(
        train_x,
        train_y,
        len(dataset.classes),
        args.epochs,
        args.lr,
        args.weight_decay,
        seed=args.seed,
    )
    train = accuracy_report(train_x @ weight.T + bias, train_y, dataset.classes)
    test = accuracy_report(test_x @ weight.T + bias, test_y, dataset.classes)
    head = save_head(
        args.out,
        weight,
        bias,
        dataset.classes,
        args.backbone,
        backbone.input_size,
        extra={"train_top1": str(train["top1"]), "test_top1": str(test["top1"])},
    )
    report = {
        "backbone": args.backbone,
        "backbone_description": backbone.description,
        "input_size": list(backbone.input_size),
        "data": str(args.data),
        "dataset": dataset.kind,
        "num_classes": len(dataset.classes),
        "train": train,
        "test": test,
        "epochs": args.epochs,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "seconds": round(time.time() - started, 1),
        "command": "python -m app.train.head " + " ".join(sys.argv[1:] if argv is None else argv),
        "head": str(head),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    test_line = "no test images"
    if test["images"]:
        test_line = f"test top-1 {test['top1']:.2%}, top-5 {test['top5']:.2%}"
    print(f"{dataset.kind}: train top-1 {train['top1']:.2%}; {test_line}")
    print(f"wrote {head}, {args.out / 'classes.json'} and {args.out / 'report.json'}")
    print(f"use it with FINERCAM_CUB_HEAD={args.out}")
    return report


if __name__ == "__main__":
    main()
