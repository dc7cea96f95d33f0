"""``python -m app.cli explain``: images or folders -> CAM and Finer-CAM maps and overlays.

For every image ``<key>`` (its path relative to the folder given) and method it writes, under
``--out/<key without extension>/``:

* ``<method>_cam.npy`` / ``<method>_cam.png``: the plain CAM, ``float32 (H, W)`` in [0, 1] at the
  image's size, and its overlay;
* ``<method>_finer_g<γ>.npy`` / ``.png``: Finer-CAM for every γ asked for;
* ``<method>_finer_auto-g<γ>.npy`` / ``.png`` with ``--gamma auto``: Finer-CAM at the γ auto-γ
  picked for this image (:mod:`app.explain.gamma`), which is also the row's ``gamma``;
* no ``.png`` with ``--no-overlays``;

and appends one row per image, method and γ to ``--out/explanations.csv`` (target, its
probability, the references and their weights, and how faithful the two maps are: ``rd_cam`` /
``rd_finer``, the relative confidence drop when the map's top ``--faithfulness-k`` pixels are
removed, and ``drop_cam`` / ``drop_finer``, the drop of the target's probability; the numbers
of the app's faithfulness line and of ``evaluate``). Images go through the model ``--batch-size``
at a time (:meth:`app.explain.service.ExplanationService.prepare_batch`; the faithfulness of a
batch's fixed-γ rows in one forward of their masked images,
:meth:`~app.explain.service.ExplanationService.faithfulness_batch`), then each is explained
from the service's cache. The files are written on a small thread pool while the next image is
explained; an image's rows are appended once its files exist. An image whose files all exist is
skipped, so an interrupted run picks up where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path, PurePosixPath

import torch
from tqdm import tqdm

from app.explain.faithfulness import Faithfulness
from app.explain.gamma import DEFAULT_GAMMA
from app.explain.service import ExplainSettings, Explanation

from .command_support import (
    BadFiles,
    Session,
    check_model,
    check_reference_options,
    exit_code,
    gamma_tag,
    open_session,
    parse_gammas,
    parse_methods,
    say,
    split_list,
)
from .datasets import CliError, Item, ItemDataset, Loaded, discover_paths
from .engines import Job, run_job, stop_on_model_failure

MANIFEST_COLUMNS = (
    "image",
    "method",
    "gamma",
    "target",
    "target_index",
    "target_probability",
    "references",
    "cam_npy",
    "finer_npy",
    "notices",
    "faithfulness_k",
    "rd_cam",
    "rd_finer",
    "drop_cam",
    "drop_finer",
)


def output_dirs(items: list[Item]) -> dict[str, PurePosixPath]:
    """``key -> folder`` relative to ``--out``: the key without its extension, or with the
    extension kept (``a_png``) when two images would share a folder."""
    stems = Counter(str(PurePosixPath(item.key).with_suffix("")) for item in items)
    dirs = {}
    for item in items:
        path = PurePosixPath(item.key)
        stem = path.with_suffix("")
        dirs[item.key] = (
            stem if stems[str(stem)] == 1 else path.with_name(path.name.replace(".", "_"))
        )
    return dirs


def file_label(method: str, fgcam: bool) -> str:
    """The method's name in output file names (FG-CAM maps get their own files)."""
    return f"{method}-fgcam" if fgcam else method


def expected_files(
    folder: Path,
    methods: list[str],
    gammas: list[float],
    fgcam: bool = False,
    overlays: bool = True,
) -> list[Path]:
    extensions = ("npy", "png") if overlays else ("npy",)
    files = []
    for method in (file_label(m, fgcam) for m in methods):
        files += [folder / f"{method}_cam.{ext}" for ext in extensions]
        for gamma in gammas:
            files += [folder / f"{method}_finer_g{gamma_tag(gamma)}.{ext}" for ext in extensions]
    return files


def is_done(
    folder: Path,
    methods: list[str],
    gammas: list[float],
    fgcam: bool,
    auto: bool,
    overlays: bool = True,
) -> bool:
    """Every file of the image exists (with ``auto``: an auto-γ map of each method too)."""
    if not all(p.is_file() for p in expected_files(folder, methods, gammas, fgcam, overlays)):
        return False
    labels = [file_label(m, fgcam) for m in methods]
    last = "png" if overlays else "npy"
    return not auto or all(any(folder.glob(f"{label}_finer_auto-g*.{last}")) for label in labels)


def split_auto(values: list[str] | None) -> tuple[list[float], bool]:
    """``--gamma`` values -> (fixed γ values, whether ``auto`` was asked for)."""
    texts = split_list(values)
    auto = any(t.strip().lower() == "auto" for t in texts)
    fixed = [t for t in texts if t.strip().lower() != "auto"]
    return (parse_gammas(fixed) if fixed or not auto else []), auto


#: ``--batch-size`` by device: a GPU keeps busy with batches; on CPU a batch saves little
#: (docs/benchmarks.md) and keeps more entries and graphs in memory.
DEFAULT_BATCH_SIZE = {"cuda": 8, "cpu": 1}


def default_batch_size(device: torch.device) -> int:
    """``--batch-size`` when not given: :data:`DEFAULT_BATCH_SIZE` of the device's type."""
    return DEFAULT_BATCH_SIZE.get(device.type, 1)


def _target(value: str | None) -> int | str | None:
    if value is None or value == "":
        return None
    return int(value) if value.strip().isdigit() else value


def run(args: argparse.Namespace) -> int:
    methods = parse_methods(args.method)
    overlays = not args.no_overlays
    gammas, auto = split_auto(args.gamma)
    _check_arguments(args)
    discovery = discover_paths(args.inputs, exclude=args.out)
    check_model(args.model)
    items = discovery.items[: args.limit] if args.limit else discovery.items
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {str(out)!r} is a file, not a folder")
    dirs = output_dirs(discovery.items)
    pending = [
        item
        for item in items
        if not is_done(out / dirs[item.key], methods, gammas, args.fgcam, auto, overlays)
    ]
    skipped = len(items) - len(pending)
    if skipped:
        say(f"{skipped} of {len(items)} image(s) already done in {out}; skipping them")
    if not pending:
        say(f"nothing to do: every output is already in {out}")
        return 0

    if args.reference_mode == "manual" and not split_list(args.references):
        raise CliError("--reference-mode manual needs --references (class names or indices)")
    session = open_session(args.model, args.device, args.threads, allow_fallback=False)
    _check_classes(session, args)
    base = _base_settings(args, methods, gammas)
    batch_size = _batch_size(session, args)
    out.mkdir(parents=True, exist_ok=True)
    job = Job(
        dataset=ItemDataset(pending, max_side=session.settings.max_side),
        process=partial(
            explain_item,
            methods=methods,
            gammas=gammas,
            base=base,
            out=out,
            dirs=dirs,
            auto=auto,
            overlays=overlays,
            faithfulness_k=args.faithfulness_k,
        ),
        model=args.model,
        device=args.device,
        threads=args.threads,
        allow_fallback=False,
        batch_size=batch_size,
        prepare=partial(
            prepare_items,
            methods=methods,
            base=base,
            gammas=gammas,
            faithfulness_k=args.faithfulness_k,
        )
        if batch_size > 1
        else None,
    )
    start = time.perf_counter()
    done, bad = _write_manifest(session, job, args, out, len(pending))
    seconds = time.perf_counter() - start
    say(
        f"explained {done} image(s) with {', '.join(methods)} at gamma "
        f"{', '.join([*map(gamma_tag, gammas), *(['auto'] if auto else [])])} "
        f"in {seconds:.1f} s; {skipped} already done; {len(bad)} could not be read -> {out}"
    )
    return exit_code(done, skipped, len(bad))


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse option values no run could use, before any model loads."""
    check_reference_options(args.reference_mode, args.weighting, args.top_t)
    if args.limit is not None and args.limit < 1:
        raise CliError(f"--limit must be at least 1, got {args.limit}")
    if args.batch_size is not None and args.batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0 <= args.faithfulness_k <= 1:
        raise CliError(
            f"--faithfulness-k must be in [0, 1] (0: no scores), got {args.faithfulness_k}"
        )


def _check_classes(session: Session, args: argparse.Namespace) -> None:
    """``--target`` and ``--references`` name classes of the loaded model."""
    for flag, value in [("--target", _target(args.target))] + [
        ("--references", _target(r)) for r in split_list(args.references)
    ]:
        if value is not None:
            try:
                session.model.class_index(value)
            except ValueError as error:
                raise CliError(f"{flag}: {error}") from error


def _base_settings(
    args: argparse.Namespace, methods: list[str], gammas: list[float]
) -> ExplainSettings:
    """The settings every image starts from (each method and γ replaces its own)."""
    return ExplainSettings(
        method=methods[0],
        gamma=gammas[0] if gammas else DEFAULT_GAMMA,
        top_t=args.top_t,
        reference_mode=args.reference_mode,
        weighting=args.weighting,
        target=_target(args.target),
        manual_references=tuple(_target(r) for r in split_list(args.references)),
        opacity=args.opacity,
        colormap=args.colormap,
        fgcam=args.fgcam,
        fgcam_stop=args.fgcam_layer,
        fgcam_denoise=args.fgcam_denoise,
        pooling=args.pooling,
        attention_blocks=args.attention_blocks,
    )


def _batch_size(session: Session, args: argparse.Namespace) -> int:
    """``--batch-size`` or the device's default, no more than the service caches."""
    batch_size = args.batch_size or default_batch_size(session.settings.torch_device)
    if batch_size > session.settings.cache_entries:
        raise CliError(
            f"--batch-size {batch_size} is more than the service caches "
            f"(FINERCAM_CACHE_ENTRIES={session.settings.cache_entries}): a batch's entries "
            "would be dropped before their images are explained"
        )
    return batch_size


def _write_manifest(
    session: Session, job: Job, args: argparse.Namespace, out: Path, total: int
) -> tuple[int, BadFiles]:
    """Run the job, appending each image's rows to ``explanations.csv`` once its files exist:
    (images explained, the files that could not be read, reported in ``out``)."""
    bad, done = BadFiles(), 0
    manifest = out / "explanations.csv"
    new_file = not manifest.is_file()
    _check_manifest(manifest, new_file)
    with open(manifest, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        if new_file:
            writer.writeheader()
        outcomes = run_job(session, job, args)
        bar = tqdm(outcomes, total=total, desc="explain", unit="img", disable=args.no_progress)
        for outcome in bar:
            stop_on_model_failure(outcome, args.model)
            if outcome.error:
                bad.add(_display(outcome.item), outcome.error)
                continue
            writer.writerows(outcome.rows)
            handle.flush()
            done += 1
    bad.report(out)
    return done, bad


def prepare_items(
    session: Session,
    batch: list[Loaded],
    methods: list[str],
    base: ExplainSettings,
    gammas: Sequence[float] = (),
    faithfulness_k: float = 0.0,
) -> None:
    """Run the model once on a batch of images for every method (methods that share an entry
    share the pass) and, with ``faithfulness_k``, score every image's maps at every method and
    fixed γ in one forward of their masked images, so :func:`explain_item` explains and scores
    each from the cache (an auto-γ row is scored on its own: its γ is picked per image)."""
    images = [loaded.image for loaded in batch]
    for method in methods:
        session.service.prepare_batch(session.model_name, images, replace(base, method=method))
    if faithfulness_k and gammas:
        settings = [replace(base, method=m, gamma=g) for m in methods for g in gammas]
        session.service.faithfulness_batch(session.model_name, images, settings, faithfulness_k)


def explain_item(
    session: Session,
    loaded: Loaded,
    methods: list[str],
    gammas: list[float],
    base: ExplainSettings,
    out: Path,
    dirs: dict[str, PurePosixPath],
    auto: bool = False,
    overlays: bool = True,
    faithfulness_k: float = 0.0,
) -> list[dict[str, object]]:
    """:func:`explain_one` into the item's output folder (the per-item work of either engine)."""
    folder = out / dirs[loaded.item.key]
    return explain_one(
        session, loaded, methods, gammas, base, folder, auto, overlays, faithfulness_k
    )


def explain_one(
    session: Session,
    loaded: Loaded,
    methods: list[str],
    gammas: list[float],
    base: ExplainSettings,
    folder: Path,
    auto: bool = False,
    overlays: bool = True,
    faithfulness_k: float = 0.0,
) -> list[dict[str, object]]:
    """Every method and γ for one image (one model pass: the service caches the rest); the
    files are queued on ``session.maps`` under the item's key.

    With ``auto`` each method also gets the map at the γ auto-γ picks for this image; with
    ``faithfulness_k`` each row is scored (one batched forward of its two masked maps).
    """
    key = loaded.item.key

    def save(stem: Path, heatmap, overlay) -> None:
        session.maps.save(key, stem, heatmap, overlay if overlays else None)

    rows = []
    for method in methods:
        label = file_label(method, base.fgcam)
        settings = replace(base, method=method)
        picks: list[tuple[float, str, str]] = [(g, f"g{gamma_tag(g)}", "") for g in gammas]
        if auto:
            strip = session.service.gamma_strip(
                session.model_name, loaded.image, settings, auto=True
            )
            chosen = strip.auto.gamma if strip.auto else DEFAULT_GAMMA
            why = f"auto gamma {gamma_tag(chosen)}: {strip.auto.reason if strip.auto else ''}"
            picks.append((chosen, f"auto-g{gamma_tag(chosen)}", why))
        for i, (gamma, suffix, why) in enumerate(picks):
            result = session.service.explain(
                session.model_name, loaded.image, replace(settings, gamma=gamma)
            )
            if i == 0:
                save(folder / f"{label}_cam", result.cam, result.cam_overlay)
            save(folder / f"{label}_finer_{suffix}", result.finer, result.finer_overlay)
            row = _row(loaded, method, result, folder, label, suffix, why)
            if faithfulness_k:
                scores = session.service.faithfulness(
                    session.model_name, loaded.image, replace(settings, gamma=gamma), faithfulness_k
                )
                row.update(_faithfulness_columns(faithfulness_k, scores))
            rows.append(row)
    return rows


def _faithfulness_columns(k: float, scores: Faithfulness) -> dict[str, object]:
    return {
        "faithfulness_k": f"{k:g}",
        "rd_cam": f"{scores.cam.relative_drop:.6g}",
        "rd_finer": f"{scores.finer.relative_drop:.6g}",
        "drop_cam": f"{scores.cam.probability_drop:.6g}",
        "drop_finer": f"{scores.finer.probability_drop:.6g}",
    }


def _check_manifest(manifest: Path, new_file: bool) -> None:
    """Refuse to append rows to an ``explanations.csv`` with other columns."""
    if new_file:
        return
    with open(manifest, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), None)
    if header is not None and tuple(header) != MANIFEST_COLUMNS:
        raise CliError(
            f"{manifest} was written by another version of this tool (columns differ); "
            "use another --out"
        )


def _row(
    loaded: Loaded,
    method: str,
    result: Explanation,
    folder: Path,
    label: str,
    suffix: str,
    why: str,
) -> dict[str, object]:
    """One manifest row: the image, the method, the γ used and what was explained."""
    return {
        "image": loaded.item.key,
        "method": method,
        "gamma": gamma_tag(result.gamma),
        "target": result.target.name,
        "target_index": result.target.index,
        "target_probability": f"{result.target.probability:.6f}",
        "references": "; ".join(
            f"{r.name} ({r.weight:.3f})" if r.weight is not None else r.name
            for r in result.references
        ),
        "cam_npy": (folder / f"{label}_cam.npy").as_posix(),
        "finer_npy": (folder / f"{label}_finer_{suffix}.npy").as_posix(),
        "notices": " | ".join([*result.notices, *([why] if why else [])]),
    }


def _display(item: Item) -> str:
    return str(item.path) if item.path is not None else item.key
