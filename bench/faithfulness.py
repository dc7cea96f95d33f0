"""Cost of the live faithfulness line and of the compare view, against one plain forward.

    python -m bench.faithfulness [--repeats 5] [--threads 2] [--model ViT-B-16] [--classes 200]
                                 [--clock wall|cpu] [--device cpu|cuda] [--smoke]

Prints, each next to one plain no-grad forward of the same model in the same run:

(a) demo-cnn: the faithfulness line of the two maps on screen (CAM and Finer-CAM, T = 3) from a
    cached entry — the maps re-rendered, masked and run through the model in one batched forward
    — and the compare view of every gradient method × {CAM, Finer}, from the cached entry (the
    panels were shown first) and cold (the entry computed too);
(b) the open_clip ViT-B/16 adapter (random weights, ``--classes`` prompts): the faithfulness
    line.

The faithfulness result cache is emptied before every timed call, the gradient entry is not
(except for "cold"). ``--smoke`` is a quick check that everything runs: one repeat, demo-cnn
only. demo-cnn runs where the model registry puts it (``FINERCAM_DEVICE``). Numbers are
medians over ``--repeats`` interleaved rounds after a warm-up.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from app.explain.service import ExplainSettings, ExplanationService
from app.models.base import ExplainableModel
from bench.latency import device_clock, interleaved_medians, timing_arguments

log = logging.getLogger("bench.faithfulness")


def _runs(
    service: ExplanationService, model: ExplainableModel, image: Image.Image, compare: bool
) -> dict[str, Callable[[], object]]:
    """The timed calls on one model: a forward, the faithfulness line, the compare view."""
    settings = ExplainSettings(gamma=0.6, top_t=3)
    x = model.preprocess(image)
    service.explain(model.name, image, settings)  # the panels: the entry is cached from here

    def forward() -> None:
        model.logits(x)

    def line() -> None:
        service.scores.clear()
        service.faithfulness(model.name, image, settings)

    runs: dict[str, Callable[[], object]] = {"forward": forward, "line": line}
    if compare:

        def compare_warm() -> None:
            service.scores.clear()
            service.compare_methods(model.name, image, settings)

        def compare_cold() -> None:
            service.scores.clear()
            service.entries.clear()
            service.trunks.clear()
            service.compare_methods(model.name, image, settings)

        runs |= {"compare": compare_warm, "compare_cold": compare_cold}
    return runs


def bench_demo_cnn(args: argparse.Namespace) -> dict[str, float]:
    from app.models.registry import ModelRegistry
    from app.synthbirds import render_sample

    registry = ModelRegistry()
    model = registry.get("demo-cnn")
    service = ExplanationService(registry.get)
    image = render_sample(3, 0).image
    timings = interleaved_medians(_runs(service, model, image, compare=True), args.repeats)
    timings["methods"] = len(service.compare_methods("demo-cnn", image).scores) // 2
    return timings


def bench_vit(args: argparse.Namespace) -> dict[str, float]:
    from app.models.adapters.clip import load_open_clip

    engine = load_open_clip(args.model, None, args.device)
    view = engine.view("bench", [f"a photo of species {i}" for i in range(args.classes)])
    service = ExplanationService(lambda name: view)
    pixels = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    return interleaved_medians(_runs(service, view, image, compare=False), args.repeats)


def _report(name: str, timings: dict[str, float]) -> None:
    forward = timings["forward"]
    print(f"{name}: one plain forward {forward * 1000:.1f} ms")
    print(
        f"    faithfulness line (CAM + Finer, T=3)     : {timings['line'] * 1000:8.1f} ms"
        f"   = {timings['line'] / forward:.2f} forwards"
    )
    if "compare" in timings:
        methods = int(timings["methods"])
        warm, cold = timings["compare"], timings["compare_cold"]
        print(
            f"    compare view, {methods} gradient methods x 2   : {warm * 1000:8.1f} ms"
            f"   = {timings['compare'] / forward:.2f} forwards (entry cached)"
        )
        print(
            f"    compare view, cold (entry computed too)  : {cold * 1000:8.1f} ms"
            f"   = {timings['compare_cold'] / forward:.2f} forwards"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    timing_arguments(parser)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="one repeat, demo-cnn only: a quick check that the bench runs",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    import bench.latency as latency

    latency.clock = device_clock(args.clock, args.device)
    if args.smoke:
        args.repeats = 1
    where = (
        torch.cuda.get_device_name(args.device)
        if args.device.type == "cuda"
        else f"{torch.get_num_threads()} CPU threads"
    )
    print(f"{where}, median of {args.repeats}, {args.clock} clock")
    _report("(a) demo-cnn (128 px)", bench_demo_cnn(args))
    if not args.smoke:
        name = f"(b) {args.model} (random weights, 224 px, {args.classes} classes)"
        _report(name, bench_vit(args))


if __name__ == "__main__":
    main()
