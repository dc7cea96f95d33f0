"""Latency of CAM + Finer-CAM side by side: our engine vs pytorch-grad-cam, in one run.

    python -m bench.latency [--repeats 5] [--threads 2] [--model ViT-B-16] [--classes 200]
                            [--size 224] [--device cpu|cuda] [--upload 1024x768]

Prints (a) ours / anchor for CAM + Finer-CAM (T=3) side by side, (b) ours / one plain
no-grad forward pass, (c) the re-render time of a cached entry for a new γ, (d) one FG-CAM map on
VGG16-BN at ``--size`` px and its ratio to one forward pass, (e) the library entry
``contrastive_cam`` on an arbitrary hooked model (torchvision ViT-B/16 at ``--size`` px): one
Finer map (T=3) against pytorch-grad-cam's FinerCAM and against one forward, (f) LeGrad and
attention-gradient CAM + Finer side by side against one forward pass and torchcam's LeGrad, and
their re-render time, (g) the CPU-side work of one ``--upload`` (resize + normalise, finishing
and colouring the maps, the γ strip from the cached gradients) with PIL/numpy and with the tensor
paths on the device, alone and end to end, (h) ``torch.compile`` of the no-grad trunk and of the
CAM tail (forward and the two backward passes of both panels) against eager, its first-call
compile time and the largest difference (on CUDA also ``mode="reduce-overhead"``: CUDA graphs).
Random weights: timing does not depend on them. Numbers are medians over ``--repeats``
interleaved rounds after a warm-up. A smoke run: ``--model ViT-S-32 --classes 4 --repeats 1
--size 32 --upload 64x48 --skip-compile``.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import FinerCAM, GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from app.explain.gamma import GAMMA_GRID
from app.explain.render import finish_maps, overlay_maps
from app.explain.service import ExplainSettings, ExplanationService
from app.models.adapters.clip import ClipEngine, ClipPromptView, load_open_clip
from app.models.preprocess import TENSOR_PATH_ENV

log = logging.getLogger("bench.latency")


#: What the timings read: wall time, or this process's CPU time (``--clock cpu``), which other
#: jobs on a shared machine do not inflate (use it with ``--threads 1``: no spinning workers).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def device_clock(kind: str, device: torch.device) -> Callable[[], float]:
    """``CLOCKS[kind]``, waiting for queued CUDA kernels first so GPU work is inside the time."""
    base = CLOCKS[kind]
    if device.type != "cuda":
        return base
    if kind == "cpu":
        raise SystemExit("--clock cpu measures this process's CPU time; use --clock wall on CUDA")

    def synchronized() -> float:
        torch.cuda.synchronize(device)
        return base()

    return synchronized


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median time of each function, timed in alternating rounds after one warm-up each.

    Interleaving keeps the ratios fair when the machine's load changes during the run.
    """
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = clock()
            run()
            times[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


class ClipClassifier(torch.nn.Module):
    """The un-split CLIP model as a plain classifier over fixed prompts (what the anchor sees)."""

    def __init__(self, engine: ClipEngine, text_embeddings: torch.Tensor) -> None:
        super().__init__()
        self.engine = engine
        # Its own copy with trainable parameters: pytorch-grad-cam backpropagates into them.
        self.clip = copy.deepcopy(engine.model).requires_grad_(True)
        self.register_buffer("texts", text_embeddings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.clip.encode_image(x)
        return self.engine.similarity_logits(features, self.texts)


def clip_reshape(grid: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, 1:, :].reshape(tokens.size(0), *grid, tokens.size(2))
        return patches.permute(0, 3, 1, 2)

    return reshape


def bench_side_by_side(args: argparse.Namespace) -> dict[str, float]:
    engine = load_open_clip(args.model, None, args.device)
    view = engine.view("bench", [f"a photo of species {i}" for i in range(args.classes)])
    image = Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    )
    x = view.preprocess(image)
    classifier = ClipClassifier(engine, view.text_embeddings()).eval()
    target = int(classifier(x).argmax())
    settings = ExplainSettings(gamma=0.6, top_t=3, target=target)

    anchor = side_by_side_anchor(classifier, view, x, target)
    service = ExplanationService(lambda name: view)

    def ours_cold() -> None:
        service.entries.clear()
        service.trunks.clear()
        service.explain("bench", image, settings)

    def forward() -> None:
        with torch.no_grad():
            classifier(x)

    service.explain("bench", image, settings)
    gammas = iter(np.linspace(0.05, 1.0, 10_000))

    def rerender() -> None:
        service.explain("bench", image, ExplainSettings(gamma=float(next(gammas)), target=target))

    timings = interleaved_medians(
        {"anchor": anchor, "ours": ours_cold, "forward": forward}, args.repeats
    )
    timings["rerender"] = interleaved_medians({"rerender": rerender}, args.repeats * 4)["rerender"]
    return timings


def side_by_side_anchor(
    classifier: ClipClassifier, view: ClipPromptView, x: torch.Tensor, target: int
) -> Callable[[], None]:
    """pytorch-grad-cam's CAM + Finer-CAM (T=3) of ``x``: the anchor of (a) and (g)."""
    layer = classifier.clip.visual.transformer.resblocks[-1].ln_1
    reshape = clip_reshape(view.grid_size(*view.engine.input_size))
    gradcam = GradCAM(classifier, [layer], reshape_transform=reshape)
    finercam = FinerCAM(classifier, [layer], reshape_transform=reshape)

    def anchor() -> None:
        gradcam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
        finercam(x, alpha=0.6, comparison_categories=[1, 2, 3], target_idx=target)

    return anchor


def with_tensor_paths(choice: str, run: Callable[[], object]) -> Callable[[], object]:
    """``run`` with :data:`TENSOR_PATH_ENV` set to ``choice`` (``on``/``off``) while it runs."""

    def forced() -> object:
        before = os.environ.get(TENSOR_PATH_ENV)
        os.environ[TENSOR_PATH_ENV] = choice
        try:
            return run()
        finally:
            if before is None:
                del os.environ[TENSOR_PATH_ENV]
            else:
                os.environ[TENSOR_PATH_ENV] = before

    return forced


def bench_device_paths(args: argparse.Namespace) -> dict[str, float]:
    """(g) The CPU-side work of one upload of ``--upload`` pixels: resizing and normalising it
    (PIL vs the tensor path on the device), finishing and colouring both maps (numpy vs the
    tensor path), the γ strip's maps and overlays from a cached entry, and both panels end to end
    with each, against the anchor of (a)."""
    width, height = args.upload
    engine = load_open_clip(args.model, None, args.device)
    view = engine.view("bench", [f"a photo of species {i}" for i in range(args.classes)])
    rng = np.random.default_rng(2)
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    x = view.preprocess(image)
    classifier = ClipClassifier(engine, view.text_embeddings()).eval()
    target = int(classifier(x).argmax())
    settings = ExplainSettings(gamma=0.6, top_t=3, target=target)
    service = ExplanationService(lambda name: view)
    pixels = np.asarray(image)
    raw = rng.standard_normal((2, *view.grid_size(*engine.input_size))).astype(np.float32)

    def render() -> None:
        overlay_maps(pixels, finish_maps(raw, image.size, args.device), 0.5, "jet", args.device)

    def cold() -> None:
        service.entries.clear()
        service.trunks.clear()
        service.explain("bench", image, settings)

    strips = ExplanationService(lambda name: view)  # its entry stays cached (warm-up round)

    def strip() -> None:
        strips.gamma_strip("bench", image, settings).overlays()

    runs = {"anchor": side_by_side_anchor(classifier, view, x, target)}
    for choice in ("off", "on"):
        runs[f"preprocess {choice}"] = with_tensor_paths(choice, lambda: view.preprocess(image))
        runs[f"render {choice}"] = with_tensor_paths(choice, render)
        runs[f"strip {choice}"] = with_tensor_paths(choice, strip)
        runs[f"ours {choice}"] = with_tensor_paths(choice, cold)
    return interleaved_medians(runs, args.repeats)


def print_device_paths(timings: dict[str, float], upload: tuple[int, int]) -> None:
    anchor = timings["anchor"]
    print(
        f"(g) CPU-side work of a {upload[0]}x{upload[1]} upload, PIL/numpy (off) vs tensor paths "
        f"on the device (on); pytorch-grad-cam CAM + Finer-CAM (T=3) {anchor * 1000:.1f} ms"
    )
    rows = (
        ("preprocess", "resize + normalise the upload"),
        ("render", "finish 2 maps + 2 overlays"),
        ("strip", f"γ strip: {len(GAMMA_GRID)} maps + {len(GAMMA_GRID)} overlays"),
        ("ours", "CAM + Finer-CAM (T=3), ours"),
    )
    for key, label in rows:
        off, on = timings[f"{key} off"], timings[f"{key} on"]
        anchored = (
            f"   ratio off/anchor = {off / anchor:.3f}   ratio on/anchor = {on / anchor:.3f}"
            if key == "ours"
            else ""
        )
        print(
            f"    {label:<33}: off {off * 1000:7.1f} ms   on {on * 1000:7.1f} ms"
            f"   ratio on/off = {on / off:.3f}{anchored}"
        )


def bench_attention(args: argparse.Namespace) -> dict[str, float]:
    """LeGrad / attention-gradient, CAM + Finer (T=3) side by side, against one forward pass and
    against torchcam's LeGrad (one plain map: torchcam has no contrastive LeGrad)."""
    import copy

    from torchcam.methods import LeGrad

    default_blocks = attention_default_blocks()

    engine = load_open_clip(args.model, None, args.device)
    view = engine.view("bench", [f"a photo of species {i}" for i in range(args.classes)])
    image = Image.fromarray(
        np.random.default_rng(1).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    )
    x = view.preprocess(image)
    service = ExplanationService(lambda name: view)
    runs: dict[str, Callable[[], object]] = {}
    for method in default_blocks:
        settings = ExplainSettings(method=method, gamma=0.6, top_t=3)

        def cold(settings: ExplainSettings = settings) -> None:
            service.entries.clear()
            service.trunks.clear()
            service.explain("bench", image, settings)

        runs[method] = cold

    def forward() -> None:
        with torch.no_grad():
            view.tail(view.trunk(x))

    model = copy.deepcopy(engine.model).requires_grad_(True)
    visual = model.visual
    for block in visual.transformer.resblocks:
        block.self_attention = block.attn  # torchcam hooks torchvision-style blocks
    texts = view.text_embeddings()
    blocks = list(visual.transformer.resblocks)[-default_blocks["legrad"] :]
    extractor = LeGrad(
        model,
        blocks,
        grid_shape=view.grid_size(*engine.input_size),
        score_projection=lambda t: engine.similarity_logits(
            visual.ln_post(t[:, 0]) @ visual.proj, texts
        ),
    )

    def torchcam_legrad() -> None:
        scores = engine.similarity_logits(model.encode_image(x), texts)
        extractor(int(scores.argmax()), scores)

    runs |= {"forward": forward, "torchcam": torchcam_legrad}
    timings = interleaved_medians(runs, args.repeats)
    for method in default_blocks:
        service.explain("bench", image, ExplainSettings(method=method))
        gammas = iter(np.linspace(0.05, 1.0, 10_000))
        timings[f"{method} rerender"] = interleaved_medians(
            {
                "r": lambda m=method, g=gammas: service.explain(
                    "bench", image, ExplainSettings(method=m, gamma=float(next(g)))
                )
            },
            args.repeats * 4,
        )["r"]
    extractor.remove_hooks()
    return timings


def bench_fgcam(args: argparse.Namespace) -> dict[str, float]:
    from torchvision.models import vgg16_bn

    from app.explain.fgcam import fgcam

    torch.manual_seed(0)
    model = vgg16_bn(weights=None).eval().to(args.device)
    x = torch.randn(1, 3, args.size, args.size).to(args.device)
    with torch.no_grad():
        channels = model.features(x).shape[1]
    weights = torch.randn(channels).to(args.device)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    return interleaved_medians(
        {"fgcam": lambda: fgcam(model.features, x, weights), "vgg_forward": forward}, args.repeats
    )


def bench_generic(args: argparse.Namespace) -> dict[str, float]:
    """The hooked path: ``contrastive_cam`` on torchvision's ViT-B/16 vs FinerCAM and a forward."""
    from torchvision.models import vit_b_16

    from app.explain import contrastive_cam
    from app.explain.engine import HookedLayerModel
    from app.explain.gradients import compute_entry

    torch.manual_seed(0)
    model = vit_b_16(weights=None, image_size=args.size).eval().to(args.device)
    layer = model.encoder.layers[-1].ln_1
    x = torch.randn(1, 3, args.size, args.size).to(args.device)
    with torch.no_grad():
        logits = model(x)[0]
    target = int(logits.argmax())
    references = [int(i) for i in torch.argsort((logits - logits[target]).abs())[1:4]]
    finercam = FinerCAM(model, [layer], reshape_transform=vit_reshape)

    def anchor() -> None:
        finercam(x, alpha=0.6, comparison_categories=[1, 2, 3], target_idx=target)

    def ours() -> None:
        contrastive_cam(model, layer, x, target, references, 0.6, reshape_transform=vit_reshape)

    def per_class() -> None:
        # The per-class cache entry of the service: one tail backward per class when the tail
        # refuses ``is_grads_batched`` (this ViT does); contrastive_cam uses one batched backward.
        compute_entry(HookedLayerModel(model, layer, vit_reshape), x, [target, *references])

    def forward() -> None:
        with torch.no_grad():
            model(x)

    runs = {"anchor": anchor, "ours": ours, "per_class": per_class, "forward": forward}
    return interleaved_medians(runs, args.repeats)


def vit_reshape(tokens: torch.Tensor) -> torch.Tensor:
    """torchvision ViT tokens ``(N, 1 + s·s, D)`` -> ``(N, D, s, s)`` (s = 14 at 224 px)."""
    side = round((tokens.size(1) - 1) ** 0.5)
    return tokens[:, 1:, :].reshape(tokens.size(0), side, side, tokens.size(2)).permute(0, 3, 1, 2)


def attention_default_blocks() -> dict[str, int]:
    """``{method: default blocks}`` of the registered attention methods."""
    from app.explain.methods import METHODS

    return {m.name: m.default_blocks for m in METHODS.values() if m.needs_attention_view}


def print_attention(timings: dict[str, float]) -> None:
    default_blocks = attention_default_blocks()

    forward = timings["forward"]
    print(
        f"(f) ViT-native methods, CAM + Finer (T=3) side by side, one forward "
        f"{forward * 1000:.1f} ms; torchcam LeGrad (one plain map) "
        f"{timings['torchcam'] * 1000:.1f} ms"
    )
    for method, blocks in default_blocks.items():
        cold, rerender = timings[method], timings[f"{method} rerender"]
        print(
            f"    {method:<19} ({blocks} blocks): {cold * 1000:8.1f} ms"
            f"   ratio /forward = {cold / forward:.3f}"
            f"   ratio /torchcam = {cold / timings['torchcam']:.3f}"
            f"   re-render {rerender * 1000:.1f} ms"
        )


COMPILE_MODES = {"cpu": ("default",), "cuda": ("default", "reduce-overhead")}


def bench_compile(args: argparse.Namespace) -> dict[str, float]:
    """(h) Does ``torch.compile`` pay for the trunk (no grad) or the CAM tail (forward and the
    backward pass of each of both panels' two score directions)? Eager against each compile
    mode of the device, with the first call (the compile) and the largest output difference."""
    engine = load_open_clip(args.model, None, args.device)
    view = engine.view("bench", [f"a photo of species {i}" for i in range(args.classes)])
    image = Image.fromarray(
        np.random.default_rng(2).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    )
    x = view.preprocess(image)
    with torch.no_grad():
        activation = view.trunk(x)
        scores = view.tail(activation)[0]
    directions = scores.topk(4).indices

    def trunk_run(trunk: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.no_grad():
                return trunk(x)

        return run

    def tail_run(tail: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            leaf = activation.detach().requires_grad_(True)
            logits = tail(leaf)[0]
            target = torch.autograd.grad(logits[directions[0]], leaf, retain_graph=True)[0]
            references = torch.autograd.grad(logits[directions[1:]].sum(), leaf)[0]
            return torch.cat([target, references])

        return run

    parts = {"trunk": (view.trunk, trunk_run), "tail": (view.tail, tail_run)}
    runs = {f"{part} eager": make(fn) for part, (fn, make) in parts.items()}
    eager = {part: runs[f"{part} eager"]() for part in parts}
    timings: dict[str, float] = {}
    for mode in COMPILE_MODES[args.device.type]:
        for part, (fn, make) in parts.items():
            compiled = make(torch.compile(fn, mode=mode, dynamic=False))
            start = time.perf_counter()
            first = compiled()
            timings[f"{part} {mode} compile s"] = time.perf_counter() - start
            timings[f"{part} {mode} max diff"] = float((first - eager[part]).abs().max())
            runs[f"{part} {mode}"] = compiled
    return timings | interleaved_medians(runs, args.repeats)


def print_compile(timings: dict[str, float], device: torch.device) -> None:
    print("(h) torch.compile against eager (first call = compile, not in the medians):")
    for part, label in (("trunk", "trunk, no grad"), ("tail", "CAM tail, fwd + 2 bwd")):
        eager = timings[f"{part} eager"]
        print(f"    {label:<22} eager              : {eager * 1000:8.1f} ms")
        for mode in COMPILE_MODES[device.type]:
            compiled = timings[f"{part} {mode}"]
            print(
                f"    {label:<22} {mode:<18} : {compiled * 1000:8.1f} ms"
                f"   ratio compiled/eager = {compiled / eager:.3f}"
                f"   first call {timings[f'{part} {mode} compile s']:.1f} s"
                f"   max |diff| {timings[f'{part} {mode} max diff']:.1e}"
            )


def timing_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every latency bench shares: repeats, threads, the open_clip model and its
    class count, the clock, the device."""
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="ViT-B-16", help="open_clip model name (random weights)")
    parser.add_argument("--classes", type=int, default=200, help="number of prompt classes")
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="wall time, or CPU time of this process (robust on a shared machine)",
    )
    parser.add_argument(
        "--device",
        type=torch.device,
        default=torch.device("cpu"),
        help="cpu (default) or cuda[:N]: where every model and input lives",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    timing_arguments(parser)
    parser.add_argument("--skip-clip", action="store_true", help="skip (a)-(c), open_clip ViT-B/16")
    parser.add_argument("--skip-fgcam", action="store_true")
    parser.add_argument(
        "--skip-generic", action="store_true", help="skip (e), torchvision ViT-B/16"
    )
    parser.add_argument("--skip-attention", action="store_true")
    parser.add_argument(
        "--skip-device-paths", action="store_true", help="skip (g), preprocessing and rendering"
    )
    parser.add_argument(
        "--skip-compile", action="store_true", help="skip (h), torch.compile against eager"
    )
    parser.add_argument(
        "--upload",
        type=upload_size,
        default=(1024, 768),
        help="WIDTHxHEIGHT of the upload of (g) (default 1024x768, the app's largest side)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=224,
        help="input side of (d) and (e), a multiple of 16 (small for a smoke run)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    global clock
    clock = device_clock(args.clock, args.device)
    where = (
        torch.cuda.get_device_name(args.device)
        if args.device.type == "cuda"
        else f"{torch.get_num_threads()} CPU threads"
    )
    print(
        f"{args.model} (random weights), 224 px, {args.classes} classes, "
        f"{where}, median of {args.repeats}, {args.clock} clock"
    )
    if not args.skip_clip:
        side = bench_side_by_side(args)
        print(f"(a) CAM + Finer-CAM (T=3), pytorch-grad-cam : {side['anchor'] * 1000:8.1f} ms")
        print(
            f"    CAM + Finer-CAM (T=3), ours             : {side['ours'] * 1000:8.1f} ms"
            f"   ratio ours/anchor = {side['ours'] / side['anchor']:.3f}"
        )
        print(
            f"(b) one plain no-grad forward pass          : {side['forward'] * 1000:8.1f} ms"
            f"   ratio ours/forward = {side['ours'] / side['forward']:.3f}"
        )
        print(f"(c) re-render a cached entry for a new γ    : {side['rerender'] * 1000:8.1f} ms")
    if not args.skip_fgcam:
        fg = bench_fgcam(args)
        print(
            f"(d) FG-CAM to the input, VGG16-BN {args.size:3d} px    : {fg['fgcam'] * 1000:8.1f} ms"
            f"   ratio fgcam/forward = {fg['fgcam'] / fg['vgg_forward']:.3f}"
            f"   (forward {fg['vgg_forward'] * 1000:.1f} ms)"
        )
    if not args.skip_generic:
        gen = bench_generic(args)
        print(
            f"(e) contrastive_cam, torchvision ViT-B/16 at {args.size} px, one Finer map (T=3), "
            "hooked path:"
        )
        print(f"    pytorch-grad-cam FinerCAM               : {gen['anchor'] * 1000:8.1f} ms")
        print(
            f"    ours                                    : {gen['ours'] * 1000:8.1f} ms"
            f"   ratio ours/anchor = {gen['ours'] / gen['anchor']:.3f}"
        )
        print(
            f"    one plain no-grad forward pass          : {gen['forward'] * 1000:8.1f} ms"
            f"   ratio ours/forward = {gen['ours'] / gen['forward']:.3f}"
        )
        print(
            f"    per-class gradients (T+1 tail backwards): {gen['per_class'] * 1000:8.1f} ms"
            f"   ratio per-class/forward = {gen['per_class'] / gen['forward']:.3f}"
        )
    if not args.skip_attention:
        print_attention(bench_attention(args))
    if not args.skip_device_paths:
        print_device_paths(bench_device_paths(args), args.upload)
    if not args.skip_compile:
        print_compile(bench_compile(args), args.device)


def upload_size(text: str) -> tuple[int, int]:
    """``1024x768`` -> (1024, 768)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from error
    return width, height


if __name__ == "__main__":
    main()
