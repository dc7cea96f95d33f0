"""CUDA paths against the CPU: engine, service, FG-CAM, metrics, CLI (skipped without CUDA).

Each test runs the same real computation on both devices and compares the results, so a device
mismatch (a tensor left on the CPU, a ``.numpy()`` on a CUDA tensor) fails here, not for users.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("method", ["gradcam", "layercam", "scorecam"])
def test_contrastive_cam_on_cuda_matches_cpu(method, tiny_cnn, image_batch):
    from app.explain import contrastive_cam

    cpu = contrastive_cam(tiny_cnn, tiny_cnn[5], image_batch, [1, 4], [2, 3], 0.6, method)
    model = tiny_cnn.cuda()
    gpu = contrastive_cam(model, model[5], image_batch.cuda(), [1, 4], [2, 3], 0.6, method)
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)


def test_contrastive_cam_on_cuda_vit(tiny_vit, image_batch):
    from app.explain import contrastive_cam

    model, layer, reshape = tiny_vit
    cpu = contrastive_cam(model, layer, image_batch, 3, [1, 2], 0.8, reshape_transform=reshape)
    gpu = contrastive_cam(
        model.cuda(), layer, image_batch.cuda(), 3, [1, 2], 0.8, reshape_transform=reshape
    )
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)


def test_fgcam_on_cuda_matches_cpu(tiny_cnn, image_batch):
    from app.explain.fgcam import fgcam

    x, weights = image_batch[:1], torch.randn(16, generator=torch.Generator().manual_seed(0))
    cpu = fgcam(tiny_cnn[:6], x, weights)
    gpu = fgcam(tiny_cnn.cuda()[:6], x.cuda(), weights.cuda())
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


def test_metrics_on_cuda_match_cpu(tiny_cnn, image_batch):
    from app.explain import metrics

    x = image_batch[:1]
    saliency = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(0))
    cpu = metrics.deletion_auc(tiny_cnn, x, saliency, 1, steps=5)
    model = tiny_cnn.cuda()
    gpu = metrics.deletion_auc(model, x.cuda(), saliency.cuda(), 1, steps=5)
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


def test_service_on_cuda_matches_cpu():
    from app.cli.command_support import open_session
    from app.explain.service import ExplainSettings

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 120, 3), dtype=np.uint8))
    results = {}
    for device in ("cpu", "cuda"):
        session = open_session("demo-cnn", device)
        assert session.model.device.type == device
        results[device] = session.service.explain(
            "demo-cnn", image, ExplainSettings(gamma=0.6, top_t=2, fgcam=True)
        )
    cpu, gpu = results["cpu"], results["cuda"]
    assert gpu.target.index == cpu.target.index
    np.testing.assert_allclose(gpu.cam, cpu.cam, atol=1e-3)
    np.testing.assert_allclose(gpu.finer, cpu.finer, atol=1e-3)


@pytest.mark.parametrize("method", ["legrad", "attention-gradient"])
def test_vit_native_methods_on_cuda_match_cpu(method):
    from app.cli.command_support import open_session
    from app.explain.service import ExplainSettings

    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 120, 3), dtype=np.uint8))
    results = {}
    for device in ("cpu", "cuda"):
        session = open_session("demo-tinyclip-species", device)
        results[device] = session.service.explain(
            "demo-tinyclip-species", image, ExplainSettings(method=method, gamma=0.6, top_t=2)
        )
    cpu, gpu = results["cpu"], results["cuda"]
    assert gpu.target.index == cpu.target.index
    np.testing.assert_allclose(gpu.finer, cpu.finer, atol=1e-3)


def test_cli_explain_on_cuda_matches_cpu(tmp_path):
    from app.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    for device in ("cpu", "cuda"):
        argv = [
            "explain",
            str(folder),
            "--out",
            str(tmp_path / device),
            "--device",
            device,
            "--workers",
            "0",
            "--no-progress",
        ]
        assert main(argv) == 0
    for file in sorted((tmp_path / "cpu").rglob("*.npy")):
        gpu = np.load(tmp_path / "cuda" / file.relative_to(tmp_path / "cpu"))
        np.testing.assert_allclose(gpu, np.load(file), atol=1e-3)


def test_resize_and_render_on_cuda_match_pil_and_numpy():
    from app.explain.render import finish_maps, overlay_maps
    from app.models.preprocess import resize_on_device

    rng = np.random.default_rng(2)
    image = Image.open("assets/examples/red-crowned-bluebird.png").convert("RGB")
    image = image.resize((1000, 700), Image.BICUBIC)
    want = np.asarray(image.resize((224, 224), Image.BICUBIC), dtype=np.float32)
    got = resize_on_device(image, (224, 224), torch.device("cuda"), "bicubic")
    assert got.is_cuda
    assert np.abs(got[0].permute(1, 2, 0).cpu().numpy() - want).max() <= 2
    raw = rng.standard_normal((2, 14, 14)).astype(np.float32)
    maps = finish_maps(raw, (128, 96), "cuda")
    np.testing.assert_allclose(maps, finish_maps(raw, (128, 96)), atol=1e-5)
    pixels = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    gpu = overlay_maps(pixels, maps, 0.6, "jet", "cuda").astype(int)  # both maps, one copy back
    assert np.abs(gpu - overlay_maps(pixels, maps, 0.6, "jet")).max() <= 1
