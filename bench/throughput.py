"""Throughput of the batch CLI against a plain pytorch-grad-cam loop, in one run.

    python -m bench.throughput [--images 6] [--model bench-vgg16bn] [--workers 1] [--repeats 1]
                               [--batch-sizes 1,8]

Both sides read the same folder of generated images and write, per image, a CAM and a Finer-CAM
(T=3, γ=0.6) map as ``.npy`` plus a ``.png`` overlay at the image's size:

* **ours**: ``python -m app.cli explain`` (run in this process through :func:`app.cli.main`),
  decoding in DataLoader workers, with ``--weighting probability`` like the anchor's targets and
  ``--faithfulness-k 0`` (the anchor scores nothing);
* **ours, .npy only**: the same with ``--no-overlays`` (no PNG encoding at all);
* **ours, with the faithfulness columns**: the same at the CLI's default ``--faithfulness-k
  0.05`` (two masked forwards' worth per image, more work than the anchor does);
* both at every ``--batch-sizes`` value (``explain --batch-size``: one forward and one batched
  backward per batch of images);
* **anchor**: for each image, pytorch-grad-cam's ``GradCAM`` and ``FinerCAM`` on the same network
  (split at the same layer, parameters trainable as pytorch-grad-cam expects), then the same
  resize, overlay and files.

``bench-vgg16bn`` is torchvision's VGG16-BN with random weights (timing does not depend on
them), registered here; any registry name works (``demo-cnn`` is the small offline model).
Prints the images per second of each, their ratio, and how far the maps are apart (the anchor
differentiates through its softmax reference weights, ours treats them as constants; batched
against unbatched ours).
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import FinerCAM, GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from app.cli import main as cli_main
from app.config import Settings
from app.explain.inputs import load_image
from app.explain.render import overlay, resize_map
from app.models.base import ExplainableModel
from app.models.registry import ModelRegistry, ModelSpec, register_model

log = logging.getLogger("bench.throughput")


def build_bench_vgg16bn(settings: Settings) -> ExplainableModel:
    from torchvision.models import vgg16_bn

    from app.models.adapters.torchvision_cnn import vgg16bn

    torch.manual_seed(0)
    labels = [f"class {i}" for i in range(1000)]
    return vgg16bn(vgg16_bn(weights=None), labels, settings.torch_device, "bench:vgg16_bn@random")


register_model(
    ModelSpec(
        "bench-vgg16bn",
        "VGG16-BN, random weights (benchmarks)",
        "classifier",
        build_bench_vgg16bn,
        offline=True,
    )
)


class WholeNetwork(torch.nn.Module):
    """An adapter's trunk and tail as one trainable classifier, with an identity module at the
    split: what a pytorch-grad-cam user would hand to ``GradCAM`` and ``FinerCAM``."""

    def __init__(self, adapter: ExplainableModel) -> None:
        super().__init__()
        self.adapter = copy.deepcopy(adapter)
        self.parts = torch.nn.ModuleList(
            m for m in vars(self.adapter).values() if isinstance(m, torch.nn.Module)
        ).requires_grad_(True)
        self.split = torch.nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter.tail(self.split(self.adapter.trunk(x)))


def anchor_loop(adapter: ExplainableModel, paths: list[Path], out: Path, max_side: int) -> None:
    """The pytorch-grad-cam way: per image one GradCAM and one FinerCAM call, then the files."""
    network = WholeNetwork(adapter).eval()
    gradcam = GradCAM(network, [network.split])
    finercam = FinerCAM(network, [network.split])
    for path in paths:
        image = load_image(path, max_side=max_side)
        x = adapter.preprocess(image)
        with torch.no_grad():
            target = int(network(x).argmax())
        cam = gradcam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
        finer = finercam(x, alpha=0.6, comparison_categories=[1, 2, 3], target_idx=target)
        rgb = np.asarray(image)
        folder = out / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        for name, grid in (("gradcam_cam", cam), ("gradcam_finer_g0.6", finer)):
            heat = resize_map(grid[0], image.size)
            np.save(folder / f"{name}.npy", heat.astype(np.float32))
            Image.fromarray(overlay(rgb, heat, 0.5)).save(folder / f"{name}.png")


def ours(folder: Path, out: Path, model: str, workers: int, *flags: str) -> None:
    argv = [
        "explain",
        str(folder),
        "--out",
        str(out),
        "--model",
        model,
        "--gamma",
        "0.6",
        "--top-t",
        "3",
        "--weighting",
        "probability",
        "--workers",
        str(workers),
        "--no-progress",
        "--faithfulness-k",
        "0",
        *flags,
    ]
    if cli_main(argv) != 0:
        raise RuntimeError("app.cli explain failed")


def make_images(folder: Path, count: int, size: int) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        paths.append(folder / f"img{i:03d}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


def map_gap(a: Path, b: Path) -> tuple[float, float]:
    """Max |difference| over the CAM maps, and over the Finer maps, of two output folders."""
    gaps = {"cam": 0.0, "finer": 0.0}
    for file in a.rglob("*.npy"):
        kind = "cam" if file.name.endswith("_cam.npy") else "finer"
        other = np.load(b / file.relative_to(a))
        gaps[kind] = max(gaps[kind], float(np.abs(np.load(file) - other).max()))
    return gaps["cam"], gaps["finer"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--size", type=int, default=224, help="generated image side (pixels)")
    parser.add_argument("--model", default="bench-vgg16bn", help="registry name")
    parser.add_argument("--workers", type=int, default=1, help="CLI DataLoader workers")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="alternating timed rounds")
    parser.add_argument(
        "--batch-sizes", default="1,8", help="explain --batch-size values to time (comma list)"
    )
    args = parser.parse_args(argv)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    settings = Settings.from_env()
    start = time.perf_counter()
    adapter = ModelRegistry(settings).get(args.model)
    load_s = time.perf_counter() - start  # every CLI run pays this once; the loop does not

    runs = {f"ours_b{b}": ["--batch-size", str(b)] for b in sizes}
    runs |= {f"npy_b{b}": ["--batch-size", str(b), "--no-overlays"] for b in sizes}
    runs |= {f"faith_b{b}": ["--batch-size", str(b), "--faithfulness-k", "0.05"] for b in sizes}
    with tempfile.TemporaryDirectory(prefix="finercam-throughput-") as tmp:
        root = Path(tmp)
        paths = make_images(root / "images", args.images, args.size)
        ours(root / "images", root / "warm", args.model, args.workers)  # warm-up: imports, caches
        anchor_loop(adapter, paths[:1], root / "warm-anchor", settings.max_side)
        times: dict[str, list[float]] = {name: [] for name in [*runs, "anchor"]}
        for round_ in range(args.repeats):
            for name, flags in runs.items():
                start = time.perf_counter()
                ours(root / "images", root / f"{name}-{round_}", args.model, args.workers, *flags)
                times[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            anchor_loop(adapter, paths, root / f"anchor-{round_}", settings.max_side)
            times["anchor"].append(time.perf_counter() - start)
        first = f"ours_b{sizes[0]}-0"
        cam_gap, finer_gap = map_gap(root / first, root / "anchor-0")
        batch_gaps = {b: map_gap(root / f"ours_b{b}-0", root / first) for b in sizes[1:]}

    rates = {name: args.images / statistics.median(values) for name, values in times.items()}
    anchor = rates["anchor"]
    print(
        f"{args.model}, {args.images} images of {args.size} px, CAM + Finer-CAM (T=3, γ=0.6), "
        f"{settings.torch_device}, {torch.get_num_threads()} CPU threads, "
        f"{args.workers} decode worker(s), median of {args.repeats}"
    )
    print(f"pytorch-grad-cam loop (GradCAM + FinerCAM)   : {anchor:7.2f} images/s")
    for b in sizes:
        ours_rate = rates[f"ours_b{b}"]
        loaded = args.images / max(statistics.median(times[f"ours_b{b}"]) - load_s, 1e-9)
        print(
            f"python -m app.cli explain --batch-size {b:<3d} : {ours_rate:7.2f} images/s"
            f"   ratio ours/anchor = {ours_rate / anchor:.2f}x"
        )
        print(
            f"  without its model load ({load_s:.2f} s)      : {loaded:7.2f} images/s"
            f"   ratio ours/anchor = {loaded / anchor:.2f}x"
        )
        print(
            f"  .npy only (--no-overlays)                 : {rates[f'npy_b{b}']:7.2f} images/s"
            f"   ratio ours/anchor = {rates[f'npy_b{b}'] / anchor:.2f}x"
        )
        print(
            f"  + faithfulness columns (k 0.05, default)  : {rates[f'faith_b{b}']:7.2f} images/s"
            f"   ratio ours/anchor = {rates[f'faith_b{b}'] / anchor:.2f}x"
        )
    print(f"max |map difference| ours (batch {sizes[0]}) vs anchor: CAM {cam_gap:.2e}, "
          f"Finer {finer_gap:.2e}")  # fmt: skip
    for b, (cam, finer) in batch_gaps.items():
        print(
            f"max |map difference| batch {b} vs batch {sizes[0]}: CAM {cam:.2e}, Finer {finer:.2e}"
        )


if __name__ == "__main__":
    main()
