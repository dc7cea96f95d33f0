"""Ground-truth explanation benchmark on the synthetic birds: does the map find the difference?

    python -m bench.groundtruth [--models demo-cnn,demo-vit] [--methods gradcam] [--count 96]
                                [--out docs/groundtruth]

Every synthetic species differs from its three genus-mates in one small part, and the generator
renders the masks of the whole bird and of that part. For every classifier and CAM method, on
held-out birds (test split; target = the true species), it measures at the defaults a user sees
(γ 0.6, T 3, closest-logit references) and along a γ sweep:

* CAM on the bird: the share of plain CAM's positive energy inside the bird mask (does the
  model *see the bird*, as real fine-grained models do?);
* energy on the part, CAM and Finer-CAM, and their ratio (does Finer-CAM keep what tells the
  species from its look-alikes?);
* the pointing game: the map's maximum within ``--tolerance`` px of the part;
* the share of the closest-logit references that are genus-mates;
* the same Finer scores with the genus-mates picked by hand (the oracle references).

A method name may end in ``+fgcam`` (FG-CAM at input resolution, CNNs only). With
``--concepts``, the tiny CLIP's concept prompt naming the part ("a bird with a red crown") is
explained against the genus prompt ("a Bluebird") too. Writes ``groundtruth.csv`` (per image),
``summary.csv`` and ``energy_vs_gamma.png`` into ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from app.explain.metrics import energy_inside, pointing_game
from app.explain.service import ExplainSettings, ExplanationService
from app.models.registry import ModelRegistry
from app.synthbirds.dataset import BirdSample, describe, iter_samples
from app.synthbirds.species import (
    GROUP_NAMES,
    PART_ATTRIBUTE,
    SPECIES_ATTRIBUTES,
    group_members,
    species_group,
)

log = logging.getLogger("bench.groundtruth")

DEFAULT_GAMMA, DEFAULT_T = 0.6, 3
GAMMAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
#: Targets: CAM on the bird, Finer/CAM energy on the part, Finer pointing, mates.
TARGETS = {"cam_bird": 0.5, "gain": 2.0, "finer_pointing": 0.9, "mates": 0.8}


@dataclass(frozen=True)
class Score:
    """One map of one image."""

    model: str
    method: str
    references: str  # "none" (plain CAM), "logits" (closest, T) or "genus-mates" (oracle)
    gamma: float
    top_t: int
    sample: int
    bird: float  # energy share inside the bird
    energy: float  # energy share inside the discriminative part
    pointing: bool
    mates: float  # share of the references that are genus-mates (nan for plain CAM)


def _map_scores(
    saliency: np.ndarray, sample: BirdSample, tolerance: float
) -> tuple[float, float, bool]:
    maps = torch.from_numpy(saliency)[None]
    part = torch.from_numpy(sample.discriminative_mask)[None]
    bird = torch.from_numpy(sample.part_masks["bird"])[None]
    return (
        float(energy_inside(maps, bird)[0]),
        float(energy_inside(maps, part)[0]),
        bool(pointing_game(maps, part, tolerance_px=tolerance)[0]),
    )


def _settings(method: str, sample: BirdSample, gammas) -> Iterator[tuple[str, ExplainSettings]]:
    """Plain CAM, Finer with the closest logits at every γ > 0, and the oracle at the default γ."""
    fgcam = method.endswith("+fgcam")
    base = ExplainSettings(
        method=method.removesuffix("+fgcam"),
        gamma=0.0,
        target=sample.species,
        top_t=DEFAULT_T,
        fgcam=fgcam,
    )
    yield "none", base
    for gamma in gammas:
        if gamma > 0:
            yield "logits", replace(base, gamma=gamma, reference_mode="logits")
    mates = tuple(m for m in group_members(sample.group) if m != sample.species)
    yield (
        "genus-mates",
        replace(base, gamma=DEFAULT_GAMMA, reference_mode="manual", manual_references=mates),
    )


def classifier_scores(
    service: ExplanationService,
    model: str,
    method: str,
    samples: list[BirdSample],
    tolerance: float,
    gammas,
) -> Iterator[Score]:
    for index, sample in enumerate(tqdm(samples, desc=f"{model} {method}", mininterval=10)):
        for references, settings in _settings(method, sample, gammas):
            result = service.explain(model, sample.image, settings)
            refs = [r.index for r in result.references]
            mates = (
                float(np.mean([species_group(r) == sample.group for r in refs]))
                if references != "none" and refs
                else float("nan")
            )
            yield Score(
                model,
                method,
                references,
                settings.gamma,
                len(refs),
                index,
                *_map_scores(result.finer, sample, tolerance),
                mates,
            )


def concept_prompt(sample: BirdSample) -> str:
    """The caption naming only the sample's discriminative part, e.g. 'a bird with a red crown'."""
    word = PART_ATTRIBUTE[sample.discriminative_part]
    return describe({word: SPECIES_ATTRIBUTES[sample.species][word]})


def contrast_prompt(sample: BirdSample) -> str:
    """The genus, e.g. 'a Bluebird': the shared look the concept is contrasted with."""
    return describe({"genus": GROUP_NAMES[sample.group]})


def concept_scores(
    service: ExplanationService,
    model: str,
    method: str,
    samples: list[BirdSample],
    tolerance: float,
    gammas,
) -> Iterator[Score]:
    for index, sample in enumerate(tqdm(samples, desc=f"{model} {method}", mininterval=10)):
        for gamma in gammas:
            result = service.explain_concepts(
                model,
                sample.image,
                concept_prompt(sample),
                [contrast_prompt(sample)],
                ExplainSettings(method=method, gamma=gamma),
            )
            references = "none" if gamma == 0 else "genus prompt"
            yield Score(
                model,
                method,
                references,
                gamma,
                int(gamma > 0),
                index,
                *_map_scores(result.finer, sample, tolerance),
                float("nan"),
            )


def summarise(scores: list[Score]) -> list[dict[str, object]]:
    groups: dict[tuple, list[Score]] = defaultdict(list)
    for item in scores:
        groups[(item.model, item.method, item.references, item.gamma, item.top_t)].append(item)
    rows = []
    for (model, method, references, gamma, top_t), items in groups.items():
        mates = [s.mates for s in items if not np.isnan(s.mates)]
        rows.append(
            {
                "model": model,
                "method": method,
                "references": references,
                "gamma": gamma,
                "T": top_t,
                "n": len(items),
                "bird": float(np.mean([s.bird for s in items])),
                "energy": float(np.mean([s.energy for s in items])),
                "pointing": float(np.mean([s.pointing for s in items])),
                "mates": float(np.mean(mates)) if mates else float("nan"),
            }
        )
    return sorted(rows, key=lambda r: (r["model"], r["method"], r["references"], r["gamma"]))


def headline(summary: list[dict[str, object]]) -> list[dict[str, object]]:
    """Per (model, method): plain CAM next to Finer at the defaults and with the oracle."""
    rows = []
    plain = {(r["model"], r["method"]): r for r in summary if r["references"] == "none"}
    at_default = {
        (r["model"], r["method"], r["references"]): r
        for r in summary
        if r["gamma"] == DEFAULT_GAMMA
    }
    for (model, method), cam in plain.items():
        finer = at_default.get((model, method, "logits")) or at_default.get(
            (model, method, "genus prompt")
        )
        if finer is None:
            continue
        oracle = at_default.get((model, method, "genus-mates"))
        rows.append(
            {
                "model": model,
                "method": method,
                "n": cam["n"],
                "cam_bird": cam["bird"],
                "cam_energy": cam["energy"],
                "cam_pointing": cam["pointing"],
                "finer_energy": finer["energy"],
                "gain": finer["energy"] / max(cam["energy"], 1e-9),
                "finer_pointing": finer["pointing"],
                "mates": finer["mates"],
                "oracle_gain": (oracle["energy"] / max(cam["energy"], 1e-9)) if oracle else None,
            }
        )
    return rows


def _verdict(key: str, value: float) -> str:
    return (
        "" if key not in TARGETS or np.isnan(value) else (" ✓" if value >= TARGETS[key] else " ✗")
    )


def print_table(rows: list[dict[str, object]]) -> None:
    print(
        f"| model | method | CAM energy on bird | CAM on part | Finer on part (γ {DEFAULT_GAMMA:g},"
        f" T {DEFAULT_T}) | Finer / CAM | CAM pointing | Finer pointing | references are "
        "genus-mates | Finer / CAM, genus-mates by hand |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        oracle = "—" if r["oracle_gain"] is None else f"{r['oracle_gain']:.2f}×"
        mates = "—" if np.isnan(r["mates"]) else f"{r['mates']:.2f}{_verdict('mates', r['mates'])}"
        print(
            f"| {r['model']} | {r['method']} | {r['cam_bird']:.2f}"
            f"{_verdict('cam_bird', r['cam_bird'])} | {r['cam_energy']:.3f} | "
            f"{r['finer_energy']:.3f} | {r['gain']:.2f}×{_verdict('gain', r['gain'])} | "
            f"{r['cam_pointing']:.2f} | {r['finer_pointing']:.2f}"
            f"{_verdict('finer_pointing', r['finer_pointing'])} | {mates} | {oracle} |"
        )


def plot(summary: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axis = pyplot.subplots(figsize=(7.5, 4.4))
    curves: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for row in summary:
        if row["references"] in ("none", "logits", "genus prompt"):
            curves[(row["model"], row["method"])].append((row["gamma"], row["energy"]))
    for (model, method), points in sorted(curves.items()):
        points.sort()
        axis.plot(*zip(*points, strict=True), marker="o", label=f"{model} · {method}")
    axis.set_xlabel("γ (0 = plain CAM)")
    axis.set_ylabel("energy inside the discriminative part")
    axis.set_title(f"Finer-CAM vs γ on held-out synthetic birds (closest logits, T={DEFAULT_T})")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def held_out(count: int, seed: int) -> tuple[list[BirdSample], int]:
    """The first ``count`` test birds whose discriminative part is visible (a branch in front
    can hide it), and how many were skipped."""
    samples = list(iter_samples(count, seed, "test"))
    visible = [s for s in samples if s.discriminative_mask.any()]
    return visible, len(samples) - len(visible)


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", default="demo-cnn,demo-vit", help="classifiers, comma-separated"
    )
    parser.add_argument(
        "--methods",
        default="gradcam",
        help="CAM methods, comma-separated (any of the app's; NAME+fgcam for "
        "FG-CAM at input resolution)",
    )
    parser.add_argument("--gammas", default=",".join(f"{g:g}" for g in GAMMAS))
    parser.add_argument("--count", type=int, default=96, help="held-out images (test split)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--tolerance", type=float, default=4.0, help="pointing-game px (128 px images)"
    )
    parser.add_argument("--out", type=Path, default=Path("out/groundtruth"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--concepts",
        action="store_true",
        help="also score the tiny CLIP's concept prompts (demo-tinyclip)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    gammas = sorted({float(g) for g in args.gammas.split(",")} | {0.0, DEFAULT_GAMMA})

    service = ExplanationService(ModelRegistry().get, max_entries=8)
    samples, hidden = held_out(args.count, args.seed)
    scores: list[Score] = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
            scores += classifier_scores(service, model, method, samples, args.tolerance, gammas)
    if args.concepts:
        scores += concept_scores(
            service, "demo-tinyclip", "gradcam", samples, args.tolerance, gammas
        )

    write_csv(args.out / "groundtruth.csv", [asdict(s) for s in scores])
    summary = summarise(scores)
    write_csv(args.out / "summary.csv", summary)
    plot(summary, args.out / "energy_vs_gamma.png")
    rows = headline(summary)
    print(
        f"{len(samples)} held-out synthetic birds (test split, seed {args.seed}; {hidden} more "
        f"skipped: a branch hides their part), pointing tolerance {args.tolerance:g} px; "
        f"target = the true species; ✓/✗ = targets {TARGETS}"
    )
    print_table(rows)
    print(f"wrote {args.out}/groundtruth.csv, summary.csv, energy_vs_gamma.png")
    return rows


if __name__ == "__main__":
    main()
