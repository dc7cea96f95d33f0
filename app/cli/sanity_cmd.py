"""``python -m app.cli evaluate --sanity``: the cascading-randomisation sanity check on a dataset.

The model's layers are re-initialised one after another, output first, on a copy of the model
(:mod:`app.explain.sanity`); after each step every method's CAM and Finer-CAM maps of the first
``--limit`` images (default :data:`DEFAULT_IMAGES`; Score-CAM, a forward per channel for every
map, the first ``--sanity-slow-limit``) are compared with the trained model's maps.
Writes ``sanity.csv`` (one row per image, method, map and step), ``sanity_summary.csv`` and
``sanity.md`` (mean Spearman ρ / SSIM per method and map after each step) into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import asdict
from pathlib import Path

from app.explain.inputs import InvalidInputError
from app.explain.sanity import markdown_table, sanity_check, summarise

from .command_support import (
    check_model,
    open_session,
    parse_gammas,
    parse_methods,
    say,
)
from .datasets import CliError, ItemDataset, discover_from_args
from .output_files import atomic_write

DEFAULT_IMAGES = 8


def run(args: argparse.Namespace) -> int:
    methods = parse_methods(args.method)
    gammas = parse_gammas(args.gamma, default=0.6)
    if len(gammas) != 1:
        raise CliError(f"--sanity compares maps at one γ, got {len(gammas)}: {gammas}")
    if args.top_t < 1:
        raise CliError(f"--top-t must be at least 1, got {args.top_t}")
    if args.sanity_depth is not None and args.sanity_depth < 1:
        raise CliError(f"--sanity-depth must be at least 1, got {args.sanity_depth}")
    if args.sanity_slow_limit < 1:
        raise CliError(f"--sanity-slow-limit must be at least 1, got {args.sanity_slow_limit}")
    discovery = discover_from_args(args)
    check_model(args.model)
    session = open_session(args.model, args.device, args.threads, allow_fallback=False)
    items = discovery.items[: args.limit or DEFAULT_IMAGES]
    dataset = ItemDataset(items, session.settings.max_side)
    loaded = [dataset[i] for i in range(len(dataset))]
    for bad in (entry for entry in loaded if entry.image is None):
        say(f"skipping {bad.item.key}: {bad.error}")
    images = [entry.image for entry in loaded if entry.image is not None]
    if not images:
        raise CliError("no image could be read for the sanity check")
    try:
        scores = sanity_check(
            session.model, images, methods, gammas[0], args.top_t, depth=args.sanity_depth,
            slow_images=args.sanity_slow_limit,
        )  # fmt: skip
    except InvalidInputError as error:
        raise CliError(str(error)) from error
    summary = summarise(scores)
    header = (
        f"Sanity check (cascading randomisation, output first) of {args.model} on "
        f"{len(images)} {discovery.layout} image(s), γ {gammas[0]:g}, T {args.top_t}: "
        "Spearman ρ / SSIM of each map with the trained model's map"
    )
    table = markdown_table(summary)
    out = Path(args.out)
    _write_csv(out / "sanity.csv", [asdict(score) for score in scores])
    _write_csv(out / "sanity_summary.csv", summary)
    atomic_write(out / "sanity.md", lambda tmp: tmp.write_text(f"{header}\n\n{table}\n"))
    print(header)
    print(table)
    say(f"results in {out} (sanity.csv, sanity_summary.csv, sanity.md)")
    return 0


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)
