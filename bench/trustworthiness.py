"""Does the live faithfulness score help a user choose a map? A test on the synthetic birds.

    python -m bench.trustworthiness [--model demo-cnn] [--methods all] [--count 96]
                                    [--slow-limit 24] [--out out/trustworthiness]

The live score of a map is its relative confidence drop at k = 5 % (RD@5 %): the drop of the
target's share ``p_c / (p_c + Σ_d p_d)`` against the references used, when the map's top 5 %
pixels are blurred away (:func:`app.explain.metrics.relative_confidence_drop`, the metric of
``evaluate``). On held-out synthetic birds the truth is known: each species differs from its
genus-mates in one part, whose mask the generator renders. For every available CAM method, on
each bird (target = the true species, γ 0.6, T 3 closest-logit references, as a user sees them)
this measures RD@5 % and the share of the map's energy inside that part, for the CAM and the
Finer-CAM map, and reports:

* per method and map, the Spearman correlation over images between RD@5 % and the energy on
  the part (does a higher score mean the map is on the part?);
* per image, among the Finer maps of all methods (and among all method × {CAM, Finer} maps, as
  a side-by-side view shows them), how often the map the score ranks first has the most energy
  on the part (energies within :data:`ENERGY_TIE` tie, and a tie is a hit), against picking a
  map at random and against always picking the map that is best on average;
* the mean energy on the part of the map the score picks, against the best single method's.

Score-CAM (no gradients: a forward per channel, ~60x Grad-CAM's time) explains only the first
``--slow-limit`` birds, as in the sanity check; its rows say on how many images they rest. The
per-image choice is only ever made among the same maps on every image, so it is reported on all
birds without the slow methods, and on the birds they explained without and with them (whether
adding Score-CAM changes the pick, and how often the pick is a Score-CAM map).

Writes ``per_image.csv`` and ``summary.md`` into ``--out`` and prints the tables.
"""

from __future__ import annotations

import argparse
import csv
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from app.explain.methods import available_methods
from app.explain.metrics import energy_inside, relative_confidence_drop
from app.explain.sanity import image_count, is_slow, rank_correlation
from app.explain.service import ExplainSettings, ExplanationService
from app.models.base import ExplainableModel
from app.models.registry import ModelRegistry
from app.synthbirds.dataset import BirdSample
from bench.groundtruth import DEFAULT_GAMMA, DEFAULT_T, held_out

log = logging.getLogger("bench.trustworthiness")

TOP_FRACTION = 0.05
MAP_KINDS = ("cam", "finer")
#: Energies this close count as a tie: methods that coincide on a model (Grad-CAM, HiResCAM and
#: XGrad-CAM after a global average pool) differ only by float32 rounding.
ENERGY_TIE = 1e-6


@dataclass(frozen=True)
class MapScore:
    """The live score and the ground truth of one map of one image."""

    sample: int
    method: str
    map: str
    rd: float
    energy: float


def image_scores(
    service: ExplanationService,
    model: ExplainableModel,
    methods: list[str],
    index: int,
    sample: BirdSample,
) -> list[MapScore]:
    """RD@5 % and energy on the part of every method's CAM and Finer map of one bird; the
    maps of all methods are masked and scored in one batched call."""
    maps, keys, references = [], [], None
    for method in methods:
        settings = ExplainSettings(
            method=method, gamma=DEFAULT_GAMMA, top_t=DEFAULT_T, target=sample.species
        )
        result = service.explain(model.name, sample.image, settings)
        references = [reference.index for reference in result.references]
        for kind in MAP_KINDS:
            maps.append(getattr(result, kind))
            keys.append((method, kind))
    stack = torch.from_numpy(np.stack(maps).astype(np.float32))
    x = model.preprocess(sample.image)
    at_input = stack.to(x.device)
    if at_input.shape[-2:] != x.shape[-2:]:
        at_input = F.interpolate(
            at_input[:, None], size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False
        )[:, 0]
    drop = relative_confidence_drop(
        model.logits,
        x,
        at_input,
        sample.species,
        references,
        top_fraction=TOP_FRACTION,
        baseline="blur",
    )
    energy = energy_inside(stack, torch.from_numpy(sample.discriminative_mask))
    return [
        MapScore(index, method, kind, float(drop.relative_drop[i]), float(energy[i]))
        for i, (method, kind) in enumerate(keys)
    ]


def correlations(scores: list[MapScore]) -> list[dict[str, object]]:
    """Per (method, map): mean RD@5 %, mean energy, Spearman(RD, energy) over images."""
    groups: dict[tuple[str, str], list[MapScore]] = defaultdict(list)
    for score in scores:
        groups[(score.method, score.map)].append(score)
    return [
        {
            "method": method,
            "map": kind,
            "n": len(items),
            "rd": float(np.mean([s.rd for s in items])),
            "energy": float(np.mean([s.energy for s in items])),
            "spearman": rank_correlation(
                np.array([s.rd for s in items]), np.array([s.energy for s in items])
            ),
        }
        for (method, kind), items in groups.items()
    ]


def choice_sets(
    scores: list[MapScore], slow: frozenset[str]
) -> list[tuple[str, list[MapScore], frozenset[str]]]:
    """The (methods, images) sets the per-image choice is measured on, each with the same maps
    on every image, and the slow methods in it: all images without the slow methods, the images
    the slow methods explained (``--slow-limit``) without them where those are fewer, and those
    images with them."""
    images: dict[str, set[int]] = defaultdict(set)
    for score in scores:
        images[score.method].add(score.sample)
    slow = slow & frozenset(images)
    if not slow:
        return [("all", scores, slow)]
    fast = [score for score in scores if score.method not in slow]
    shared = set.intersection(*(images[method] for method in slow))
    names = ", ".join(sorted(slow))
    sets = [(f"without {names}", fast, frozenset())]
    if shared != set().union(*images.values()):
        sets.append((f"without {names}", [s for s in fast if s.sample in shared], frozenset()))
    return [*sets, (f"with {names}", [s for s in scores if s.sample in shared], slow)]


def choice_quality(
    scores: list[MapScore], kinds: tuple[str, ...], slow: frozenset[str] = frozenset()
) -> dict[str, object]:
    """How the map with the highest RD@5 % among ``kinds`` maps compares with the truth, and
    how often it is a map of a ``slow`` method. Every image must offer the same maps: a best
    map over different candidate sets would compare unlike things."""
    per_image: dict[int, list[MapScore]] = defaultdict(list)
    for score in scores:
        if score.map in kinds:
            per_image[score.sample].append(score)
    if len({frozenset((c.method, c.map) for c in group) for group in per_image.values()}) > 1:
        raise ValueError("the images offer different maps: choose on a consistent set")
    means: dict[tuple[str, str], list[float]] = defaultdict(list)
    for score in scores:
        if score.map in kinds:
            means[(score.method, score.map)].append(score.energy)
    best_fixed = max(means, key=lambda key: float(np.mean(means[key])))
    hits, chance, fixed_hits, picked_energy, picked_slow, within = [], [], [], [], [], []
    for candidates in per_image.values():
        most = max(c.energy for c in candidates)
        picked = max(candidates, key=lambda c: c.rd)
        fixed = next(c for c in candidates if (c.method, c.map) == best_fixed)
        hits.append(picked.energy >= most - ENERGY_TIE)
        chance.append(np.mean([c.energy >= most - ENERGY_TIE for c in candidates]))
        fixed_hits.append(fixed.energy >= most - ENERGY_TIE)
        picked_energy.append(picked.energy)
        picked_slow.append(picked.method in slow)
        within.append(
            rank_correlation(
                np.array([c.rd for c in candidates]), np.array([c.energy for c in candidates])
            )
        )
    return {
        "candidates": len(means),
        "images": len(per_image),
        "score_pick_is_best": float(np.mean(hits)),
        "random_pick_is_best": float(np.mean(chance)),
        "best_fixed": f"{best_fixed[0]} {best_fixed[1]}",
        "best_fixed_is_best": float(np.mean(fixed_hits)),
        "score_pick_energy": float(np.mean(picked_energy)),
        "best_fixed_energy": float(np.mean(means[best_fixed])),
        "score_pick_is_slow": float(np.mean(picked_slow)) if slow else None,
        "within_image_spearman": float(np.mean(within)),
    }


def report(model: str, scores: list[MapScore], slow: frozenset[str]) -> str:
    """The two markdown tables of the study: per method and map (``n``: the images it rests
    on), and the per-image choice on each consistent set of :func:`choice_sets`."""
    lines = [
        "| model | method | map | n | mean RD@5 % | mean energy on part | "
        "Spearman(RD@5 %, energy) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in correlations(scores):
        lines.append(
            f"| {model} | {row['method']} | {'CAM' if row['map'] == 'cam' else 'Finer'} "
            f"| {row['n']} | {row['rd']:.3f} | {row['energy']:.3f} | "
            f"{row['spearman']:+.2f} |"
        )
    lines += [
        "",
        "| model | choosing among | methods | maps | images | score's pick has the most energy "
        "| random pick | always the best-on-average map (which) | energy of score's pick "
        "| energy of best-on-average map | score's pick is a slow method's | "
        "mean within-image Spearman |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, kinds in (("Finer maps", ("finer",)), ("CAM and Finer maps", MAP_KINDS)):
        for methods, subset, among in choice_sets(scores, slow):
            q = choice_quality(subset, kinds, among)
            slow_share = (
                "—" if q["score_pick_is_slow"] is None else f"{q['score_pick_is_slow']:.2f}"
            )
            lines.append(
                f"| {model} | {label} | {methods} | {q['candidates']} | {q['images']} | "
                f"{q['score_pick_is_best']:.2f} | {q['random_pick_is_best']:.2f} | "
                f"{q['best_fixed_is_best']:.2f} ({q['best_fixed']}) | "
                f"{q['score_pick_energy']:.3f} | {q['best_fixed_energy']:.3f} | {slow_share} | "
                f"{q['within_image_spearman']:+.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo-cnn")
    parser.add_argument(
        "--methods",
        default="all",
        help="CAM methods, comma-separated, or all (every method the model runs)",
    )
    parser.add_argument("--count", type=int, default=96, help="held-out birds (test split)")
    parser.add_argument(
        "--slow-limit",
        type=int,
        default=24,
        help="methods without gradients (Score-CAM) explain only the first N birds",
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=Path("out/trustworthiness"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.slow_limit < 1:
        parser.error(f"--slow-limit must be at least 1, got {args.slow_limit}")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    registry = ModelRegistry()
    model = registry.get(args.model)
    methods = (
        [m.name for m in available_methods(model)]
        if args.methods == "all"
        else [m.strip() for m in args.methods.split(",") if m.strip()]
    )
    service = ExplanationService(registry.get, max_entries=4)
    samples, hidden = held_out(args.count, args.seed)
    counts = {method: image_count(method, len(samples), args.slow_limit) for method in methods}
    scores = [
        score
        for index, sample in enumerate(tqdm(samples, desc=args.model, mininterval=10))
        for score in image_scores(
            service, model, [m for m in methods if index < counts[m]], index, sample
        )
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "per_image.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(asdict(scores[0])))
        writer.writeheader()
        writer.writerows(asdict(score) for score in scores)
    header = (
        f"{len(samples)} held-out synthetic birds (test split, seed {args.seed}; {hidden} "
        f"skipped: their part is hidden), {args.model}, target = true species, γ "
        f"{DEFAULT_GAMMA:g}, T {DEFAULT_T} closest-logit references, RD at k = "
        f"{TOP_FRACTION:.0%} (blur baseline)"
    )
    limited = sorted(method for method, count in counts.items() if count < len(samples))
    if limited:
        header += f"; {', '.join(limited)} on the first {args.slow_limit} birds (--slow-limit)"
    slow = frozenset(filter(is_slow, methods))
    text = f"{header}\n\n{report(args.model, scores, slow)}\n"
    (args.out / "summary.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
