"""Train the demo ViT (a small hybrid timm VisionTransformer) on synthetic birds.

    python -m app.train.demo_vit --steps 500 --seed 0 --cnn assets/demo --out assets/demo

The conv stem (patch embedding) is initialised from the trained demo CNN's first three stages
(``--cnn``: the folder of ``demo-cnn.safetensors``) and frozen; the projection, the transformer
and the head train on the same seeded pool and soft targets as the CNN
(:mod:`app.train.demo_cnn`). Writes ``demo-vit.safetensors`` and ``demo-vit.json`` into
``--out``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from app.models.zoo.demo_assets import DEMO_DIR
from app.models.zoo.demo_vit import DEFAULT_VIT, IMAGE_SIZE, build_demo_vit
from app.synthbirds import NUM_SPECIES, SPECIES_NAMES
from app.train.demo_cnn import add_common_arguments, evaluate, fit, save, train_record
from app.train.demo_common import seed_everything


def load_stem(model: torch.nn.Module, cnn_dir: Path) -> None:
    """Copy the demo CNN's stem and layer1..layer3 into the ViT's patch embedding; freeze them."""
    from safetensors.torch import load_file

    state = load_file(str(cnn_dir / "demo-cnn.safetensors"))
    stem = model.patch_embed.stem
    wanted = {k: v for k, v in state.items() if k.split(".")[0] in dict(stem.named_children())}
    stem.load_state_dict(wanted, strict=True)
    for parameter in stem.parameters():
        parameter.requires_grad_(False)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, steps=500, lr=1e-3, weight_decay=0.05)
    parser.add_argument(
        "--cnn",
        type=Path,
        default=DEMO_DIR,
        help="folder of the trained demo-cnn.safetensors (stem weights)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    seed_everything(args.seed, args.threads)
    model = build_demo_vit(NUM_SPECIES)
    load_stem(model, args.cnn)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=args.weight_decay)
    mean, std, seconds = fit(model, args, "demo-vit", optimizer, frozen=model.patch_embed.stem)
    metrics = evaluate(model, args.test_size, args.test_seed, mean, std)
    print(
        f"{metrics} on {args.test_size} held-out images (split 'test', seed "
        f"{args.test_seed}); training took {seconds:.0f} s",
        flush=True,
    )
    meta = {
        "name": "demo-vit",
        "labels": list(SPECIES_NAMES),
        "vit": DEFAULT_VIT,
        "image_size": IMAGE_SIZE,
        "mean": mean,
        "std": std,
        "target_layer": "blocks[-1].norm1",
        **metrics,
        "test_size": args.test_size,
        "test_split": "test",
        "test_seed": args.test_seed,
        "train": {
            **train_record(args, seconds, "app.train.demo_vit", argv),
            "stem_from": str(args.cnn / "demo-cnn.safetensors"),
        },
    }
    save(model, args.out, "demo-vit", meta)
    return meta


if __name__ == "__main__":
    main()
