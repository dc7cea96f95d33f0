"""``python -m app.cli evaluate``: faithfulness and localization of CAM vs Finer-CAM on a dataset.

For every image, method and variant — ``plain`` (CAM, γ = 0) and ``finer`` at each γ of the
sweep — it scores the map with :mod:`app.explain.metrics`:

* ``deletion_auc`` (lower is better) and ``insertion_auc`` (higher is better) of the target's
  probability while the map's pixels are removed from / revealed in the image (``--steps``);
* ``rel_conf_drop`` (higher is better): the drop of the target's share of the probability it
  holds with its references, ``p_c / (p_c + Σ_d p_d)``, when the map's top ``--top-fraction``
  pixels are removed; ``prob_drop`` is the same for ``p_c`` alone;
* when the image has a region (CUB box or part discs, the synthetic birds' discriminative part):
  ``energy_inside`` (share of the map inside it) and ``pointing_game`` (map maximum inside it).

The target is the ground-truth label (``--target label``, default) or the predicted class; the
references are the service's (top-``T`` by logits by default) and are the same for the plain and
the Finer maps of an image, so the rows compare like with like.

Outputs in ``--out``: ``per_image.csv`` (one row per image, method and variant; a rerun skips
rows already there), ``summary.csv`` and ``summary.md`` (mean and standard error per method ×
variant), ``gamma_sweep.png`` (every metric against γ), ``run.json`` (the settings, checked on
resume) and ``bad_files.txt``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import textwrap
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from app.explain import metrics
from app.explain.methods import get_method
from app.explain.service import ExplainSettings, Explanation
from app.models.base import ExplainableModel

from .command_support import (
    BadFiles,
    Session,
    check_choice,
    check_model,
    check_reference_options,
    exit_code,
    gamma_tag,
    open_session,
    parse_gammas,
    parse_methods,
    say,
)
from .datasets import (
    REGIONS,
    CliError,
    Discovery,
    Item,
    ItemDataset,
    LabelResolver,
    Loaded,
    discover_from_args,
)
from .engines import Job, run_job, stop_on_model_failure
from .output_files import atomic_write

# (column, table heading, higher is better)
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("deletion_auc", "deletion AUC ↓", False),
    ("insertion_auc", "insertion AUC ↑", True),
    ("rel_conf_drop", "rel. conf. drop ↑", True),
    ("prob_drop", "conf. drop ↑", True),
    ("energy_inside", "energy inside ↑", True),
    ("pointing_game", "pointing game ↑", True),
)
CSV_COLUMNS = (
    "image",
    "label",
    "label_index",
    "predicted",
    "predicted_index",
    "correct",
    "target",
    "target_index",
    "references",
    "method",
    "variant",
    "gamma",
    "deletion_auc",
    "insertion_auc",
    "rel_conf_drop",
    "prob_drop",
    "rc_before",
    "rc_after",
    "p_before",
    "energy_inside",
    "pointing_game",
    "map_empty",
)
REQUIRED = ("image", "method", "variant", "gamma", "deletion_auc", "insertion_auc", "rel_conf_drop")
# Settings that change the numbers: a resumed run must use the same ones.
FINGERPRINT = (
    "model",
    "dataset",
    "target",
    "reference_mode",
    "top_t",
    "weighting",
    "top_fraction",
    "steps",
    "baseline",
    "region",
    "part_radius",
    "tolerance",
    "fgcam",
)


@dataclass(frozen=True)
class Variant:
    """One map per image and method: ``plain`` CAM or Finer-CAM at ``gamma``."""

    method: str
    variant: str
    gamma: float

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.method, self.variant, gamma_tag(self.gamma))

    @property
    def label(self) -> str:
        return "plain" if self.variant == "plain" else f"Finer γ={gamma_tag(self.gamma)}"


def variants_for(methods: Sequence[str], gammas: Sequence[float]) -> list[Variant]:
    """``plain`` plus ``finer`` at every γ > 0 (Finer at γ = 0 *is* plain CAM)."""
    out = []
    for method in methods:
        out.append(Variant(method, "plain", 0.0))
        out += [Variant(method, "finer", g) for g in gammas if g > 0]
    return out


# --------------------------------------------------------------------------------------------
# Per-image CSV


def read_rows(path: Path) -> list[dict[str, str]]:
    """Complete rows of ``per_image.csv``; a torn last line (interrupted run) is dropped and
    the file rewritten without it."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            return []
        if tuple(reader.fieldnames) != CSV_COLUMNS:
            raise CliError(
                f"{path} was written by another version of this tool (columns differ); "
                "use another --out or --overwrite"
            )
        rows = list(reader)
    good = [row for row in rows if all(row.get(c) not in (None, "") for c in REQUIRED)]
    if len(good) != len(rows):
        say(f"dropping {len(rows) - len(good)} incomplete row(s) from {path}")
        _write_rows(path, good)
    return good


def _write_rows(path: Path, rows: Iterable[dict[str, object]]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


# --------------------------------------------------------------------------------------------
# One image


@dataclass(frozen=True)
class MetricOptions:
    target: str = "label"
    top_t: int = 3
    reference_mode: str = "logits"
    weighting: str = "uniform"
    top_fraction: float = 0.05
    steps: int = 20
    baseline: str = "blur"
    batch_size: int = 64
    tolerance: float = 0.0
    fgcam: bool = False
    fgcam_layer: int = 0
    fgcam_denoise: bool = False
    pooling: str | None = None
    attention_blocks: int | None = None


def evaluate_item(
    session: Session,
    loaded: Loaded,
    labels: dict[str, int | None],
    todo: dict[str, list[Variant]],
    options: MetricOptions,
) -> list[dict[str, object]]:
    """:func:`evaluate_image` with the item's label and missing variants (either engine)."""
    key = loaded.item.key
    return evaluate_image(session, loaded, labels.get(key), todo[key], options)


def evaluate_image(
    session: Session,
    loaded: Loaded,
    label_index: int | None,
    wanted: Sequence[Variant],
    options: MetricOptions,
) -> list[dict[str, object]]:
    """Rows for the ``wanted`` variants of one image: one model pass (cached by the service),
    then every map of the image scored together, in batches of perturbed images."""
    target = label_index if options.target == "label" else None
    maps, first = _variant_maps(session, loaded, wanted, options, target)
    references = [ref.index for ref in first.references]
    scores = _map_scores(session.model, loaded, maps, first.target.index, references, options)
    predicted = first.top[0]
    shared = {
        "image": loaded.item.key,
        "label": loaded.item.label or "",
        "label_index": "" if label_index is None else label_index,
        "predicted": predicted.name,
        "predicted_index": predicted.index,
        "correct": "" if label_index is None else int(predicted.index == label_index),
        "target": first.target.name,
        "target_index": first.target.index,
        "references": "; ".join(session.model.labels[r] for r in references),
    }
    return [
        shared
        | {
            "method": variant.method,
            "variant": variant.variant,
            "gamma": gamma_tag(variant.gamma),
            **{column: values[i] for column, values in scores.items()},
            "map_empty": int(not np.any(maps[i] > 0)),
        }
        for i, variant in enumerate(wanted)
    ]


def _variant_maps(
    session: Session,
    loaded: Loaded,
    wanted: Sequence[Variant],
    options: MetricOptions,
    target: int | None,
) -> tuple[list[np.ndarray], Explanation]:
    """The map of every wanted variant, in order, and the first method's plain explanation
    (target, references and predictions are the same for every method)."""
    maps: list[np.ndarray] = []
    first: Explanation | None = None
    for method in dict.fromkeys(v.method for v in wanted):
        settings = ExplainSettings(
            method=method,
            gamma=0.0,
            top_t=options.top_t,
            reference_mode=options.reference_mode,
            weighting=options.weighting,
            target=target,
            fgcam=options.fgcam,
            fgcam_stop=options.fgcam_layer,
            fgcam_denoise=options.fgcam_denoise,
            pooling=options.pooling,
            attention_blocks=options.attention_blocks,
        )
        plain = session.service.explain(session.model_name, loaded.image, settings)
        first = first or plain
        for variant in (v for v in wanted if v.method == method):
            if variant.variant == "plain":
                maps.append(plain.cam)
            else:
                finer = session.service.explain(
                    session.model_name, loaded.image, replace(settings, gamma=variant.gamma)
                )
                maps.append(finer.finer)
    if first is None:
        raise ValueError("no variant to evaluate")
    return maps, first


def _map_scores(
    model: ExplainableModel,
    loaded: Loaded,
    maps: list[np.ndarray],
    target: int,
    references: list[int],
    options: MetricOptions,
) -> dict[str, list[object]]:
    """Every metric of every map, as the manifest's columns (masks: energy and pointing)."""
    x = model.preprocess(loaded.image)
    stack = torch.from_numpy(np.stack(maps).astype(np.float32)).to(x.device)
    at_input = (
        stack
        if stack.shape[-2:] == x.shape[-2:]
        else F.interpolate(
            stack[:, None], size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False
        )[:, 0]
    )
    common = dict(baseline=options.baseline, batch_size=options.batch_size)
    deletion = metrics.deletion_auc(
        model.logits, x, at_input, target, steps=options.steps, **common
    )
    insertion = metrics.insertion_auc(
        model.logits, x, at_input, target, steps=options.steps, **common
    )
    drop = metrics.relative_confidence_drop(
        model.logits, x, at_input, target, references, top_fraction=options.top_fraction, **common
    )
    count = len(maps)
    energy = pointing = [""] * count
    if loaded.mask is not None:
        mask = torch.from_numpy(np.asarray(loaded.mask, dtype=bool)).to(x.device)
        energy = [_fmt(e) for e in metrics.energy_inside(stack, mask).tolist()]
        pointing = [
            int(p)
            for p in metrics.pointing_game(stack, mask, tolerance_px=options.tolerance).tolist()
        ]
    floats = {
        "deletion_auc": deletion,
        "insertion_auc": insertion,
        "rel_conf_drop": drop.relative_drop,
        "prob_drop": drop.probability_drop,
        "rc_before": drop.relative_before,
        "rc_after": drop.relative_after,
        "p_before": drop.probability_before,
    }
    return {column: [_fmt(float(v[i])) for i in range(count)] for column, v in floats.items()} | {
        "energy_inside": energy,
        "pointing_game": pointing,
    }


# --------------------------------------------------------------------------------------------
# Summary


def summarize(
    rows: Sequence[dict[str, str]], variants: Sequence[Variant]
) -> list[dict[str, object]]:
    """Mean and standard error of every metric per method × variant (rows without a value for
    a metric, e.g. no region, are left out of that metric)."""
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], row["variant"], row["gamma"])].append(row)
    summary = []
    for variant in variants:
        group = groups.get(variant.key, [])
        entry: dict[str, object] = {
            "method": variant.method,
            "variant": variant.variant,
            "gamma": gamma_tag(variant.gamma),
            "n": len(group),
        }
        for column, _, _ in METRICS:
            values = [float(r[column]) for r in group if r.get(column) not in (None, "")]
            values = [v for v in values if math.isfinite(v)]
            entry[f"{column}_n"] = len(values)
            entry[f"{column}_mean"] = float(np.mean(values)) if values else None
            entry[f"{column}_sem"] = (
                float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
            )
        summary.append(entry)
    return summary


def accuracy(rows: Sequence[dict[str, str]]) -> tuple[float, int] | None:
    per_image = {
        row["image"]: row["correct"] for row in rows if row.get("correct") not in (None, "")
    }
    if not per_image:
        return None
    return sum(int(v) for v in per_image.values()) / len(per_image), len(per_image)


def format_table(summary: Sequence[dict[str, object]], method_labels: dict[str, str]) -> str:
    """A Markdown pipe table (readable as plain text): one row per method × variant."""
    shown = [m for m in METRICS if any(e[f"{m[0]}_n"] for e in summary)]
    head = ["method", "map", "n"] + [heading for _, heading, _ in shown]
    lines = [head]
    for entry in summary:
        variant = "CAM (plain)" if entry["variant"] == "plain" else f"Finer-CAM γ={entry['gamma']}"
        cells = [
            method_labels.get(str(entry["method"]), str(entry["method"])),
            variant,
            str(entry["n"]),
        ]
        for column, _, _ in shown:
            mean, sem = entry[f"{column}_mean"], entry[f"{column}_sem"]
            cells.append(
                "–" if mean is None else f"{mean:.3f}" + ("" if sem is None else f" ± {sem:.3f}")
            )
        lines.append(cells)
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    text = [
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
        for row in lines
    ]
    text.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(text)


def plot_sweep(
    summary: Sequence[dict[str, object]], path: Path, title: str, method_labels: dict[str, str]
) -> None:
    """Every metric (mean ± standard error) against γ, one line per method; γ = 0 is CAM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [m for m in METRICS if any(e[f"{m[0]}_n"] for e in summary)]
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, (column, heading, _) in zip(axes.flat, shown, strict=False):
        for method in dict.fromkeys(str(e["method"]) for e in summary):
            points = sorted(
                (float(e["gamma"]), e[f"{column}_mean"], e[f"{column}_sem"] or 0.0)
                for e in summary
                if e["method"] == method and e[f"{column}_mean"] is not None
            )
            if points:
                g, mean, sem = map(np.asarray, zip(*points, strict=True))
                ax.errorbar(
                    g,
                    mean,
                    yerr=sem,
                    marker="o",
                    capsize=3,
                    label=method_labels.get(method, method),
                )
        ax.set_title(heading)
        ax.set_xlabel("γ (0 = plain CAM)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(textwrap.fill(title, 40 * cols), fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# The command


def run(args: argparse.Namespace) -> int:
    methods = parse_methods(args.method)
    gammas = parse_gammas(args.gamma, default=0.6)
    _check_options(args)
    discovery = discover_from_args(args)
    check_model(args.model)
    for note in discovery.notes:
        say(note)
    items = discovery.items[: args.limit] if args.limit else discovery.items
    region = _region(args.region, discovery.layout)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {str(out)!r} is a file, not a folder")
    config = _run_config(args, discovery, region)
    per_image = out / "per_image.csv"
    _check_resume(out, config, args.overwrite)

    session = open_session(args.model, args.device, args.threads, allow_fallback=False)
    labels, items = _known_labels(args, session, items)
    variants = variants_for(methods, gammas)
    out.mkdir(parents=True, exist_ok=True)
    described = {
        **config,
        "model_description": session.model.description,
        "device": str(session.model.device),
    }
    (out / "run.json").write_text(json.dumps(described, indent=2) + "\n")
    rows = read_rows(per_image)
    todo = _todo(items, variants, rows)
    pending = [item for item in items if todo[item.key]]
    skipped = len(items) - len(pending)
    if skipped:
        say(f"{skipped} of {len(items)} image(s) already scored in {per_image}; skipping them")

    bad, start = BadFiles(), time.perf_counter()
    scored = 0
    if pending:
        job = Job(
            dataset=ItemDataset(pending, session.settings.max_side, region, args.part_radius),
            process=partial(
                evaluate_item, labels=labels, todo=todo, options=_metric_options(args, session)
            ),
            model=args.model,
            device=args.device,
            threads=args.threads,
            allow_fallback=False,
        )
        scored = _score(session, job, args, pending, per_image, rows, bad)
    bad.report(out)
    seconds = time.perf_counter() - start

    current = _latest_rows(rows, {item.key for item in items})
    summary = summarize(current, variants)
    labels_by_method = {m: get_method(m).label for m in methods}
    table = format_table(summary, labels_by_method)
    header = _header(args, discovery.layout, region, current, summary)
    _write_summary(out, summary, header, table)
    if current:
        plot_sweep(summary, out / "gamma_sweep.png", header, labels_by_method)
    print(header)
    print(table)
    say(
        f"scored {scored} image(s) in {seconds:.1f} s, {skipped} already done, {len(bad)} "
        f"could not be read; results in {out} (per_image.csv, summary.csv, summary.md"
        + (", gamma_sweep.png)" if current else ")")
    )
    return exit_code(scored, skipped, len(bad))


def _check_options(args: argparse.Namespace) -> None:
    """Refuse option values and combinations ``evaluate`` cannot honour, before any work."""
    check_reference_options(args.reference_mode, args.weighting, args.top_t)
    if args.reference_mode == "manual":
        raise CliError(
            "evaluate picks references per image: use --reference-mode logits or weights"
        )
    check_choice(args.target, ("label", "predicted"), "--target")
    check_choice(args.region, REGIONS + ("none",), "--region")
    check_choice(args.baseline, ("blur", "mean"), "--baseline")
    if not 0 < args.top_fraction <= 1:
        raise CliError(f"--top-fraction must be in (0, 1], got {args.top_fraction}")
    for flag, value, low in (
        ("--steps", args.steps, 1),
        ("--batch-size", args.batch_size, 1),
        ("--limit", args.limit, 1),
    ):
        if value is not None and value < low:
            raise CliError(f"{flag} must be at least {low}, got {value}")
    if args.dataset == "synthbirds" and args.root:
        raise CliError("--dataset synthbirds renders its images; give no folder (use --count N)")


def _region(region: str, layout: str) -> str:
    """The ground-truth region to score: ``auto`` on synthetic birds is their discriminative
    part; the regions of one dataset are refused on the other."""
    if region == "auto":
        region = "discriminative" if layout == "synthbirds" else "auto"
    if layout == "synthbirds" and region in ("box", "parts"):
        raise CliError(
            f"--region {region} needs CUB_200_2011; synthetic birds have discriminative|bird"
        )
    if layout != "synthbirds" and region in ("discriminative", "bird"):
        raise CliError(f"--region {region} is for --dataset synthbirds only")
    return region


def _run_config(args: argparse.Namespace, discovery: Discovery, region: str) -> dict[str, object]:
    """What the scores depend on: a resumed run must have been made with the same."""
    return {
        "model": args.model,
        "dataset": {
            "layout": discovery.layout,
            "root": None if args.root is None else str(Path(args.root).resolve()),
            "split": args.split,
            "seed": args.synth_seed if discovery.layout == "synthbirds" else None,
        },
        "target": args.target,
        "reference_mode": args.reference_mode,
        "top_t": args.top_t,
        "weighting": args.weighting,
        "top_fraction": args.top_fraction,
        "steps": args.steps,
        "baseline": args.baseline,
        "region": region,
        "part_radius": args.part_radius,
        "tolerance": args.tolerance,
        # absent (None) when off, so results from before this option resume unchanged
        "fgcam": {"layer": args.fgcam_layer, "denoise": args.fgcam_denoise} if args.fgcam else None,
        **{
            name: getattr(args, name)
            for name in ("pooling", "attention_blocks")
            if getattr(args, name) is not None
        },
    }


def _known_labels(
    args: argparse.Namespace, session: Session, items: list[Item]
) -> tuple[dict[str, int | None], list[Item]]:
    """Each item's class index in the model; with ``--target label`` items whose label the
    model does not know are dropped, with a warning naming them."""
    resolver = LabelResolver(session.model.labels)
    labels = {item.key: resolver(item.label) for item in items}
    unknown = Counter(
        item.label for item in items if item.label is not None and labels[item.key] is None
    )
    if not unknown:
        return labels, items
    shown = ", ".join(f"{name!r} ({n})" for name, n in unknown.most_common(10))
    more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
    examples = ", ".join(repr(label) for label in list(session.model.labels)[:3])
    action = (
        "they are scored for the predicted class, without accuracy"
        if args.target == "predicted"
        else "they are skipped (use --target predicted to score the predicted class)"
    )
    say(
        f"warning: {sum(unknown.values())} image(s) have labels that {args.model} does not "
        f"know: {shown}{more}; the model's classes look like {examples}; {action}"
    )
    if args.target == "label":
        items = [item for item in items if item.label is None or labels[item.key] is not None]
        if not items:
            raise CliError(
                f"no image has a label that {args.model} knows; check --model, or use "
                "--target predicted"
            )
    return labels, items


def _todo(
    items: list[Item], variants: list[Variant], rows: list[dict[str, str]]
) -> dict[str, list[Variant]]:
    """Per image, the variants not yet in ``per_image.csv`` (what a resumed run still scores)."""
    done: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    for row in rows:
        done[row["image"]].add((row["method"], row["variant"], row["gamma"]))
    return {item.key: [v for v in variants if v.key not in done[item.key]] for item in items}


def _metric_options(args: argparse.Namespace, session: Session) -> MetricOptions:
    return MetricOptions(
        target=args.target,
        top_t=args.top_t,
        reference_mode=args.reference_mode,
        weighting=args.weighting,
        top_fraction=args.top_fraction,
        steps=args.steps,
        baseline=args.baseline,
        tolerance=args.tolerance,
        fgcam=args.fgcam,
        fgcam_layer=args.fgcam_layer,
        fgcam_denoise=args.fgcam_denoise,
        pooling=args.pooling,
        attention_blocks=args.attention_blocks,
        batch_size=args.batch_size or (16 if session.model.device.type == "cpu" else 64),
    )


def _score(
    session: Session,
    job: Job,
    args: argparse.Namespace,
    pending: list[Item],
    per_image: Path,
    rows: list[dict[str, str]],
    bad: BadFiles,
) -> int:
    """Run the job, appending each image's rows to ``per_image.csv`` (and ``rows``) as it
    finishes, so an interrupted run resumes; return how many images were scored."""
    if not per_image.is_file() or not rows:
        _write_rows(per_image, [])
    scored = 0
    with open(per_image, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        bar = tqdm(
            run_job(session, job, args),
            total=len(pending),
            desc="evaluate",
            unit="img",
            disable=args.no_progress,
        )
        for outcome in bar:
            item = outcome.item
            stop_on_model_failure(outcome, args.model)
            if outcome.error:
                bad.add(str(item.path) if item.path is not None else item.key, outcome.error)
                continue
            writer.writerows(outcome.rows)
            handle.flush()
            rows += outcome.rows
            scored += 1
    return scored


def _latest_rows(rows: list[dict[str, str]], keys: set[str]) -> list[dict[str, str]]:
    """The last row of each (image, method, variant, γ) of this run's images."""
    latest: dict[tuple[str, str, str, str], dict[str, str]] = {}
    for row in rows:
        if row["image"] in keys:
            latest[(row["image"], row["method"], row["variant"], row["gamma"])] = row
    return list(latest.values())


def _header(
    args: argparse.Namespace,
    layout: str,
    region: str,
    current: list[dict[str, str]],
    summary: list[dict[str, object]],
) -> str:
    """One line saying what the table measured."""
    acc = accuracy(current)
    return (
        f"{args.model} on {layout} ({len({r['image'] for r in current})} images); "
        f"target = {args.target}, references: top-{args.top_t} by {args.reference_mode} "
        f"({args.weighting}); drops at top {args.top_fraction:g} of pixels; {args.steps} steps, "
        f"{args.baseline} baseline"
        + (f"; region = {region}" if any(e["energy_inside_n"] for e in summary) else "")
        + (f"; model accuracy {acc[0]:.1%} of {acc[1]}" if acc else "")
    )


def _check_resume(out: Path, config: dict, overwrite: bool) -> None:
    saved_path = out / "run.json"
    per_image = out / "per_image.csv"
    if overwrite:
        for name in (
            "per_image.csv",
            "summary.csv",
            "summary.md",
            "gamma_sweep.png",
            "run.json",
            "bad_files.txt",
        ):
            (out / name).unlink(missing_ok=True)
        return
    if not per_image.is_file() or not saved_path.is_file():
        return
    try:
        saved = json.loads(saved_path.read_text())
    except (OSError, json.JSONDecodeError):
        raise CliError(f"{saved_path} is unreadable; use another --out or --overwrite") from None
    changed = [k for k in FINGERPRINT if saved.get(k) != config.get(k)]
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in changed)
        raise CliError(
            f"{out} holds results made with other settings ({details}); use another --out, "
            "or --overwrite to start again"
        )


def _write_summary(out: Path, summary: list[dict[str, object]], header: str, table: str) -> None:
    columns = ["method", "variant", "gamma", "n"] + [
        f"{c}_{s}" for c, _, _ in METRICS for s in ("mean", "sem", "n")
    ]

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for entry in summary:
                writer.writerow(
                    {k: ("" if entry.get(k) is None else entry.get(k)) for k in columns}
                )

    atomic_write(out / "summary.csv", write_csv)
    atomic_write(
        out / "summary.md", lambda tmp: tmp.write_text(f"{header}\n\n{table}\n", encoding="utf-8")
    )
