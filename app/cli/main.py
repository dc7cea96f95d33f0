"""Argument parsing and dispatch for ``python -m app.cli``.

    python -m app.cli explain photos/ --model demo-cnn --method gradcam,layercam --gamma 0.6
    python -m app.cli evaluate --dataset synthbirds --count 200 --model demo-cnn \
        --method gradcam,layercam --gamma 0,0.3,0.6,1.0
    python -m app.cli evaluate /data/CUB_200_2011 --model cub200-clip-zeroshot --split test

Exit status: 0 when anything succeeded (or everything was already done), 1 when every image
failed, 2 for a usage problem (bad path, empty folder, unknown model or option), 130 when
interrupted (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from app.explain.methods import methods_help

from .options import COLORMAP_NAMES, REGIONS, SYNTH_TEST_SEED, CliError


def _common(parser: argparse.ArgumentParser, default_gamma: str, default_out: str) -> None:
    model = parser.add_argument_group("model and maps")
    model.add_argument(
        "--model",
        default="demo-cnn",
        help="registry name (default: demo-cnn, the offline demo model), an "
        "allowed Hub id (org/repo: timm, transformers or open_clip, told from "
        "its files; timm:NAME; hf-hub:org/repo@cub200) or a trained head's "
        "folder (python -m app.train.head)",
    )
    model.add_argument(
        "--head",
        metavar="PATH",
        help="a trained head (folder with head.safetensors, or the file); the same as --model PATH",
    )
    model.add_argument(
        "--method",
        action="append",
        metavar="NAME[,NAME]",
        help="CAM method(s), repeat or comma-separate (default: gradcam): " + methods_help(),
    )
    model.add_argument(
        "--gamma",
        action="append",
        metavar="G[,G]",
        help=f"Finer-CAM γ value(s) in [0, 2]; a list is a sweep; `explain` also takes "
        f"`auto` (γ picked per image) (default: {default_gamma})",
    )
    model.add_argument(
        "--top-t",
        type=int,
        default=3,
        metavar="T",
        help="number of reference (look-alike) classes (default: 3)",
    )
    model.add_argument(
        "--reference-mode",
        default="logits",
        metavar="MODE",
        help="logits | weights | manual (default: logits)",
    )
    model.add_argument(
        "--weighting",
        default="uniform",
        metavar="W",
        help="reference weights: uniform | probability (default: uniform)",
    )
    model.add_argument(
        "--fgcam",
        action="store_true",
        help="raise both maps to pixel resolution with FG-CAM (plain CNNs and "
        "ResNets); explain names its files <method>-fgcam_*",
    )
    model.add_argument(
        "--fgcam-layer",
        type=int,
        default=0,
        metavar="I",
        help="FG-CAM output: the input of layer I of the model's FG-CAM stack "
        "(default 0 = the input image)",
    )
    model.add_argument("--fgcam-denoise", action="store_true", help="FG-CAM's SVD denoising")
    model.add_argument(
        "--pooling",
        default=None,
        choices=("token", "avg"),
        help="CLIP models: explain the class token (what CLIP computes) or the "
        "average-pooled surrogate (the official Finer-CAM CLIP tutorial)",
    )
    model.add_argument(
        "--attention-blocks",
        type=int,
        default=None,
        metavar="N",
        help="legrad / attention-gradient: how many last ViT blocks to read "
        "(default: the method's measured default)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--device",
        default=None,
        help="auto | cpu | cuda | cuda:N (default: FINERCAM_DEVICE or auto)",
    )
    run.add_argument("--out", default=default_out, help=f"output folder (default: {default_out})")
    run.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images")
    run.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="DataLoader processes decoding images (default: min(4, CPUs - 1); 0 = none)",
    )
    run.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: torch's choice)",
    )
    run.add_argument(
        "--engine",
        default="local",
        choices=("local", "ray"),
        help="local: this process (default); ray: Ray Data actors, one per GPU "
        "(else per node) of the cluster; needs `pip install 'ray[data]'`",
    )
    run.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="--engine ray: an existing cluster (e.g. ray://head:10001 or auto); "
        "default: start a local Ray runtime for this run",
    )
    run.add_argument(
        "--ray-cpus",
        type=int,
        default=None,
        metavar="N",
        help="--engine ray: CPUs of the local runtime (default: all)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("-v", "--verbose", action="store_true", help="log model loading and more")
    parser.set_defaults(default_gamma=default_gamma)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.cli",
        description="Finer-CAM Studio batch tools: explain images, evaluate CAM vs Finer-CAM.",
        epilog="Exit status: 0 ok, 1 every image failed, 2 usage error, 130 interrupted.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{explain,evaluate}")

    explain = sub.add_parser(
        "explain",
        help="images or folders -> CAM / Finer-CAM maps (.npy) and overlays (.png)",
        description="Write <out>/<image>/<method>_cam.{npy,png} and <method>_finer_g<γ>.{npy,png} "
        "for every image (folders are searched recursively) and append rows to "
        "<out>/explanations.csv. Images whose files exist are skipped.",
    )
    explain.add_argument("inputs", nargs="+", metavar="PATH", help="image files and/or folders")
    _common(explain, "0.6", "out/explain")
    explain.add_argument(
        "--target",
        default=None,
        help="class to explain, name or index (default: the predicted class)",
    )
    explain.add_argument(
        "--references",
        action="append",
        metavar="C[,C]",
        help="reference classes for --reference-mode manual (names or indices)",
    )
    explain.add_argument("--opacity", type=float, default=0.5, help="overlay opacity (default 0.5)")
    explain.add_argument(
        "--no-overlays", action="store_true", help="write only the .npy maps, no .png overlays"
    )
    explain.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="images run through the model together, one forward and one batched backward "
        "(default: 8 on CUDA, 1 on CPU; Score-CAM's masked passes, FG-CAM and the ViT "
        "attention methods still run per image)",
    )
    explain.add_argument(
        "--faithfulness-k",
        type=float,
        default=0.05,
        metavar="K",
        help="share of each map's top pixels removed for the rd_*/drop_* columns "
        "of explanations.csv (default 0.05; 0 leaves them empty)",
    )
    explain.add_argument(
        "--colormap",
        choices=COLORMAP_NAMES,
        default=COLORMAP_NAMES[0],
        help="colour map of the overlays (default jet, the paper's)",
    )

    evaluate = sub.add_parser(
        "evaluate",
        help="dataset -> per-image metrics CSV, summary table per method x {plain, Finer}, γ plot",
        description="Score CAM (plain, γ=0) and Finer-CAM (each γ) per image: deletion / "
        "insertion AUC, relative confidence drop, and energy inside / pointing game "
        "when a region (CUB box or parts, synthetic birds' discriminative part) "
        "exists. Rows already in <out>/per_image.csv are skipped.",
    )
    evaluate.add_argument(
        "root",
        nargs="?",
        default=None,
        help="ImageFolder (<root>/<class>/<image>) or CUB_200_2011 folder",
    )
    _common(evaluate, "0.6", "out/evaluate")
    data = evaluate.add_argument_group("dataset")
    data.add_argument(
        "--dataset",
        default="auto",
        choices=("auto", "imagefolder", "cub", "synthbirds"),
        help="layout of ROOT (auto: CUB when images.txt is there, else ImageFolder); "
        "synthbirds renders the offline demo test set",
    )
    data.add_argument(
        "--split",
        default="test",
        choices=("test", "train", "all"),
        help="CUB train_test_split.txt / synthbirds split (default: test)",
    )
    data.add_argument(
        "--count", type=int, default=200, help="synthbirds: number of images (default: 200)"
    )
    data.add_argument(
        "--synth-seed",
        type=int,
        default=SYNTH_TEST_SEED,
        help=f"synthbirds: dataset seed (default: {SYNTH_TEST_SEED}, the held-out test set)",
    )
    data.add_argument(
        "--region",
        default="auto",
        choices=REGIONS + ("none",),
        help="localization region: box | parts (CUB), discriminative | bird "
        "(synthbirds), none; auto: CUB box (else parts), synthbirds "
        "discriminative part",
    )
    data.add_argument(
        "--part-radius",
        type=float,
        default=0.05,
        help="CUB parts: disc radius as a fraction of the shorter image side (0.05)",
    )
    scoring = evaluate.add_argument_group("scoring")
    scoring.add_argument(
        "--target",
        default="label",
        choices=("label", "predicted"),
        help="class whose maps are scored (default: the ground-truth label)",
    )
    scoring.add_argument(
        "--top-fraction",
        type=float,
        default=0.05,
        help="fraction of top pixels removed for the confidence drops (0.05)",
    )
    scoring.add_argument(
        "--steps", type=int, default=20, help="deletion / insertion curve steps (default: 20)"
    )
    scoring.add_argument(
        "--baseline",
        default="blur",
        choices=("blur", "mean"),
        help="what removed pixels become (default: blur)",
    )
    scoring.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="pointing game tolerance in pixels (default: 0 = inside the region)",
    )
    scoring.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="perturbed images per model forward pass (default: 16 on CPU, "
        "where small batches stay in cache, 64 on CUDA)",
    )
    scoring.add_argument(
        "--overwrite",
        action="store_true",
        help="discard earlier results in --out instead of resuming",
    )
    sanity = evaluate.add_argument_group("sanity check")
    sanity.add_argument(
        "--sanity",
        action="store_true",
        help="instead of the metrics: re-initialise the model's layers one after "
        "another (head first) on a copy and report each map's Spearman ρ "
        "and SSIM with the trained model's (first --limit images, default 8)",
    )
    sanity.add_argument(
        "--sanity-depth",
        type=int,
        default=None,
        metavar="N",
        help="--sanity: stop after N layers (default: every layer the model declares)",
    )
    sanity.add_argument(
        "--sanity-slow-limit",
        type=int,
        default=2,
        metavar="N",
        help="--sanity: Score-CAM (a forward per channel for every map) checks only the first "
        "N images (default 2)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "head", None):
        args.model = args.head
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.gamma is None:
        args.gamma = [args.default_gamma]
    try:
        if args.command == "explain":
            from . import explain_cmd

            return explain_cmd.run(args)
        if args.sanity:
            from . import sanity_cmd

            return sanity_cmd.run(args)
        from . import evaluate_cmd

        return evaluate_cmd.run(args)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume", file=sys.stderr)
        return 130
