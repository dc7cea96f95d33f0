"""Concept localisation on the synthetic birds: which method finds the named part?

    python -m bench.concepts [--model demo-tinyclip] [--count 40] [--blocks 1,2,4,all]

For each held-out bird, the concept naming its discriminative part ("a bird with a red crown")
is explained against its body colour ("a blue bird"), with γ = 1, by Grad-CAM on the last
block's ``ln_1``, LeGrad and attention-gradient (for several numbers of blocks), each through the
class token and through the average-pooled surrogate. A map *points* at the part when its
maximum lies within ``--tolerance`` px of the part's mask; *energy* is the share of the map
inside the part. Plain (the concept alone) and Finer (concept − γ·contrast) come from the same
call. Prints one table row per (method, pooling, blocks) and writes ``concepts.csv``.
"""

from __future__ import annotations

import argparse
import csv
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from app.explain.metrics import energy_inside, pointing_game
from app.explain.service import ExplainSettings, ExplanationService
from app.models.registry import ModelRegistry
from app.synthbirds.dataset import BirdSample, describe, iter_samples
from app.synthbirds.species import SPECIES_ATTRIBUTES

log = logging.getLogger("bench.concepts")

POOLINGS = ("token", "avg")
ATTENTION_METHODS = ("legrad", "attention-gradient")


@dataclass(frozen=True)
class Variant:
    method: str
    pooling: str
    blocks: int | None  # None: Grad-CAM (reads one layer)

    @property
    def label(self) -> str:
        return self.method if self.blocks is None else f"{self.method} ({self.blocks} blocks)"


def concept_prompts(sample: BirdSample) -> tuple[str, str]:
    """('a bird with a red crown', 'a blue bird'): the part's colour against the body's."""
    attributes = SPECIES_ATTRIBUTES[sample.species]
    part = sample.discriminative_part
    word = part if part in attributes else part.replace("_", " ")
    return describe({word: attributes[word]}), describe({"body": attributes["body"]})


def variants(block_choices: list[int]) -> Iterator[Variant]:
    for pooling in POOLINGS:
        yield Variant("gradcam", pooling, None)
        for method in ATTENTION_METHODS:
            for blocks in block_choices:
                yield Variant(method, pooling, blocks)


def scores(maps: np.ndarray, mask: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """(energy inside, pointing hit) for each map of ``maps`` ``(N, H, W)`` against one mask."""
    saliency = torch.from_numpy(maps)
    region = torch.from_numpy(np.broadcast_to(mask, maps.shape).copy())
    energy = energy_inside(saliency, region).numpy()
    hits = pointing_game(saliency, region, tolerance_px=tolerance).numpy()
    return energy, hits.astype(float)


def run(
    service: ExplanationService,
    model: str,
    samples: list[BirdSample],
    block_choices: list[int],
    gamma: float,
    tolerance: float,
) -> list[dict[str, object]]:
    totals: dict[Variant, list[np.ndarray]] = {}
    for sample in tqdm(samples, desc=model):
        concept, contrast = concept_prompts(sample)
        for variant in variants(block_choices):
            settings = ExplainSettings(
                method=variant.method,
                gamma=gamma,
                pooling=variant.pooling,
                attention_blocks=variant.blocks,
            )
            result = service.explain_concepts(model, sample.image, concept, [contrast], settings)
            energy, hits = scores(
                np.stack([result.cam, result.finer]), sample.discriminative_mask, tolerance
            )
            totals.setdefault(variant, []).append(np.concatenate([hits, energy]))
    rows = []
    for variant, values in totals.items():
        mean = np.mean(values, axis=0)
        rows.append(
            {
                "method": variant.label,
                "pooling": variant.pooling,
                "pointing plain": round(float(mean[0]), 3),
                "pointing Finer": round(float(mean[1]), 3),
                "energy plain": round(float(mean[2]), 4),
                "energy Finer": round(float(mean[3]), 4),
            }
        )
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[name]) for name in header) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo-tinyclip", help="a concepts (CLIP) model")
    parser.add_argument("--count", type=int, default=40, help="held-out birds (test split)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument(
        "--blocks",
        default="1,2,4,all",
        help="numbers of last blocks for the attention methods ('all' = every block)",
    )
    parser.add_argument("--tolerance", type=float, default=4.0, help="pointing-game px")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("out/concepts"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    registry = ModelRegistry()
    service = ExplanationService(registry.get, max_entries=16)
    depth = registry.get(args.model).engine.split.num_blocks
    block_choices = sorted(
        {depth if b == "all" else min(int(b), depth) for b in args.blocks.split(",")}
    )
    samples = list(iter_samples(args.count, args.seed, "test"))
    rows = run(service, args.model, samples, block_choices, args.gamma, args.tolerance)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "concepts.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(
        f"{args.model}: {len(samples)} held-out birds (seed {args.seed}); concept = the "
        f"discriminative part's colour vs the body colour, γ = {args.gamma:g}, pointing within "
        f"{args.tolerance:g} px; {depth} blocks in the image tower"
    )
    print_table(rows)


if __name__ == "__main__":
    main()
