"""Hub models by id through the real huggingface_hub / timm / open_clip code on a local cache.

The tests write a Hub cache (``HF_HUB_CACHE`` layout) holding a tiny timm ViT and a tiny
open_clip model they create, and load them by Hub id with ``HF_HUB_OFFLINE=1`` — the code path
a Space runs, with no mocked loader. Metadata and downloads come from a real HTTP server on
127.0.0.1 set as the Hub endpoint.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch
from huggingface_hub import constants

from app.config import Settings
from app.explain.service import ExplainSettings, ExplanationService
from app.models.hub import loading as hub_models
from app.models.hub import policy as hub
from app.models.registry import ModelLoadError, ModelRegistry
from tests.hubfixtures import (
    TIMM_LABELS,
    FakeHub,
    blob_name,
    hanging_server,
    offline_hub,
    tiny_open_clip_files,
    tiny_timm_cnn_files,
    tiny_timm_files,
    write_repo,
)

TIMM_REPO, CLIP_REPO = "finercam-test/tiny-vit", "finercam-test/tiny-clip"
TIMM_ID, CLIP_ID = f"timm:{TIMM_REPO}", f"hf-hub:{CLIP_REPO}"
CNN_REPO = "finercam-test/tiny-resnet"


@pytest.fixture(scope="module")
def repo_files():
    return {
        TIMM_REPO: tiny_timm_files(),
        CLIP_REPO: tiny_open_clip_files(),
        CNN_REPO: tiny_timm_cnn_files(),
    }


@pytest.fixture
def cache(tmp_path, monkeypatch, repo_files):
    """A fresh Hub cache holding both tiny models; offline; the test repos allowed."""
    folder = tmp_path / "hub"
    for repo, files in repo_files.items():
        write_repo(folder, repo, files)
    with offline_hub(monkeypatch, folder):
        yield folder


@pytest.fixture
def online(monkeypatch):
    """``use(url)``: go online against the Hub endpoint ``url``."""

    def use(url: str) -> None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(
            constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            url + "/{repo_id}/resolve/{revision}/{filename}",
        )
        hub.reset_state()

    yield use
    hub.reset_state()


def _registry(**overrides) -> ModelRegistry:
    return ModelRegistry(Settings(device="cpu", **overrides))


def test_timm_classifier_by_hub_id(cache, rgb_image):
    registry = _registry()
    model = registry.get(TIMM_ID)
    assert list(model.labels) == TIMM_LABELS  # the config's label names
    assert model.description.startswith(f"timm {TIMM_REPO}")
    service = ExplanationService(registry.get)
    explanation = service.explain(TIMM_ID, rgb_image, ExplainSettings(top_t=2))
    assert explanation.cam_overlay.shape[:2] == (rgb_image.height, rgb_image.width)
    assert explanation.target.name in TIMM_LABELS
    # Same weights as timm builds from the files: the logits match a direct forward.
    import timm

    reference = timm.create_model(f"hf-hub:{TIMM_REPO}", pretrained=True).eval()
    x = model.preprocess(rgb_image)
    assert torch.allclose(model.logits(x), reference(x), atol=1e-5)


def test_timm_cnn_by_hub_id_gets_imagenet_names(cache, rgb_image):
    registry = _registry()
    model = registry.get(f"timm:{CNN_REPO}")
    assert model.num_classes == 1000 and model.labels[0].startswith("tench")
    explanation = ExplanationService(registry.get).explain(
        f"timm:{CNN_REPO}", rgb_image, ExplainSettings(method="gradcam", top_t=2)
    )
    assert explanation.cam_overlay.shape[:2] == (rgb_image.height, rgb_image.width)


def test_open_clip_by_hub_id_as_concepts_and_zero_shot(cache, rgb_image):
    registry = _registry()
    concepts = registry.get(CLIP_ID).with_prompts(["a red crown", "a bird"])
    assert concepts.logits(concepts.preprocess(rgb_image)).shape == (1, 2)
    zero_shot = registry.get(f"{CLIP_ID}@cub200")
    assert zero_shot.num_classes == 200 and zero_shot.labels[0] == "Black-footed Albatross"
    assert zero_shot.trunk_key == concepts.trunk_key  # one engine under both views
    custom = hub_models.register_class_list(["House Sparrow", "Song Sparrow", "Fox Sparrow"])
    view = registry.get(f"{CLIP_ID}@{custom}")
    assert list(view.labels) == ["House Sparrow", "Song Sparrow", "Fox Sparrow"]
    service = ExplanationService(registry.get)
    explanation = service.explain(f"{CLIP_ID}@{custom}", rgb_image, ExplainSettings(top_t=1))
    assert explanation.finer_overlay is not None


def test_allow_list_refusals(cache, monkeypatch):
    monkeypatch.setenv("FINERCAM_HUB_MODELS", "imageomics/*,timm/resnet*")
    registry = _registry()
    with pytest.raises(ValueError, match="not on this Space's allow-list"):
        registry.get(TIMM_ID)
    monkeypatch.setenv("FINERCAM_HUB_MODELS", "")
    with pytest.raises(ValueError, match=r"allow-list of Hub models \(none\)"):
        registry.get(CLIP_ID)
    monkeypatch.delenv("FINERCAM_HUB_MODELS")
    assert "imageomics/bioclip" in hub.allowed_patterns()  # the curated default
    with pytest.raises(ValueError, match="not on this Space's allow-list"):
        registry.get("timm:someone/anything")
    with pytest.raises(ValueError, match="not a Hub model id"):
        registry.get("hf-hub:no-slash")


def test_size_cap_and_safetensors_refused_from_metadata_before_download(
    cache, online, repo_files, monkeypatch
):
    fake = FakeHub(
        {
            "finercam-test/big-vit": repo_files[TIMM_REPO],
            "finercam-test/pickle-vit": {"config.json": b"{}", "pytorch_model.bin": b"x"},
        },
        sizes={"model.safetensors": 3 * 2**30},
    )
    try:
        online(fake.url)
        monkeypatch.setenv("FINERCAM_HUB_MAX_MB", "100")
        registry = _registry()
        with pytest.raises(ModelLoadError, match=r"weighs 3072 MB, over this Space's cap of 100"):
            registry.get("timm:finercam-test/big-vit")
        with pytest.raises(ModelLoadError, match="no .safetensors weights"):
            registry.get("timm:finercam-test/pickle-vit")
    finally:
        fake.close()
    assert not any("/resolve/" in path for _, path in fake.requests), fake.requests
    assert any(path.startswith("/api/models/finercam-test/big-vit") for _, path in fake.requests)
    assert not (cache / "models--finercam-test--big-vit").exists()


def test_plain_ids_are_detected_from_the_live_hub_file_listing(cache, online, repo_files):
    """Online, a plain ``org/name`` is told apart by the Hub's own file listing (model_info) and
    config.json, then loads from the Hub; an unknown repo names the Hub's answer."""
    from app.models.hub import detect

    live = {
        "finercam-test/live-vit": repo_files[TIMM_REPO],
        "finercam-test/live-clip": repo_files[CLIP_REPO],
        "finercam-test/live-notes": {"README.md": b"# no model here"},
    }
    fake = FakeHub(live)
    try:
        online(fake.url)
        assert detect.detect_library("finercam-test/live-vit") == "timm"
        assert detect.detect_library("finercam-test/live-clip") == "open_clip"
        with pytest.raises(ValueError, match=r"cannot tell which library .*README\.md"):
            detect.detect_library("finercam-test/live-notes")
        with pytest.raises(ValueError, match="could not list the files of finercam-test/nope"):
            detect.detect_library("finercam-test/nope")
        model = _registry().get("finercam-test/live-vit")
    finally:
        fake.close()
    assert list(model.labels) == TIMM_LABELS
    listed = {path.split("?")[0] for method, path in fake.requests if method == "GET"}
    for repo in live:
        assert f"/api/models/{repo}" in listed, fake.requests
    assert not any("live-clip" in path and path.endswith(".safetensors") for path in listed)
    assert (cache / "models--finercam-test--live-vit").is_dir()  # downloaded into the cache


def test_lru_eviction_message(cache):
    registry = _registry(max_loaded=1)
    registry.get(TIMM_ID)
    registry.get(CLIP_ID)
    notice = registry.notice(CLIP_ID)
    assert notice and f"Unloaded {TIMM_ID}" in notice and "at most 1 Hub models" in notice
    assert not registry.loaded(TIMM_ID) and registry.loaded(CLIP_ID)
    registry.get(TIMM_ID)  # reloads on demand, evicting the other
    assert f"Unloaded {CLIP_ID}" in registry.notice(TIMM_ID)


def _weights_blob(cache, repo: str, files: dict[str, bytes], name: str):
    return cache / ("models--" + repo.replace("/", "--")) / "blobs" / blob_name(name, files[name])


@pytest.mark.parametrize("fault", ["truncated", "missing blob"])
def test_cut_download_is_removed_and_downloaded_again(cache, online, repo_files, fault):
    files = repo_files[TIMM_REPO]
    blob = _weights_blob(cache, TIMM_REPO, files, "model.safetensors")
    if fault == "truncated":
        blob.write_bytes(files["model.safetensors"][: len(files["model.safetensors"]) // 2])
    else:
        blob.unlink()
    registry = _registry()
    with pytest.raises(ModelLoadError) as info:
        registry.get(TIMM_ID)  # offline: the cache only
    message = str(info.value)
    expected = "incomplete download" if fault == "truncated" else "missing blob"
    assert expected in message and "downloaded again on the next try" in message
    assert not blob.exists()
    fake = FakeHub({TIMM_REPO: files})
    try:
        online(fake.url)
        model = registry.get(TIMM_ID)  # next try: a clean download from the (local) Hub
    finally:
        fake.close()
    assert list(model.labels) == TIMM_LABELS
    assert blob.read_bytes() == files["model.safetensors"]
    assert any(
        m == "GET" and p.split("?")[0].endswith("/model.safetensors") for m, p in fake.requests
    )


def test_hanging_hub_stalls_no_one(cache, online, monkeypatch, rgb_image):
    """A Hub that accepts and never answers: the demo model answers at once, the Hub model's
    request gives up and falls back within ~15 s, and health says "degraded" meanwhile."""
    from app.models import registry as registry_module

    monkeypatch.setattr(registry_module, "STUCK_AFTER_S", 0.5)
    fake = FakeHub({})
    with hanging_server() as hanging:
        online(fake.url)
        assert hub.hub_online()  # the probe passed; then the network starts hanging
        monkeypatch.setattr(constants, "ENDPOINT", hanging)
        monkeypatch.setattr(
            constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            hanging + "/{repo_id}/resolve/{revision}/{filename}",
        )
        registry = _registry()
        service = ExplanationService(registry.get)
        result: dict[str, object] = {}

        def load_hub_model() -> None:
            started = time.monotonic()
            result["model"] = registry.get("birds525-dinov2")
            result["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=load_hub_model)
        thread.start()
        deadline = time.monotonic() + 10.0
        while registry.health()["status"] != "degraded":
            assert thread.is_alive() and time.monotonic() < deadline, "never reported degraded"
            time.sleep(0.05)
        started = time.monotonic()
        explanation = service.explain("demo-cnn", rgb_image, ExplainSettings())
        other = time.monotonic() - started
        thread.join(timeout=30)
    fake.close()
    assert explanation.target.name and other < 5.0, other  # not blocked by the stuck load
    assert not thread.is_alive() and result["seconds"] < 15.0, result
    assert result["model"].name == "demo-cnn"
    notice = registry.notice("birds525-dinov2")
    assert notice.startswith("birds525-dinov2 unavailable") and len(notice) < 200
    assert registry.health()["status"] == "ok"
    assert not hub.hub_online()  # remembered: the next Hub model goes to the cache at once


def test_cli_explains_with_a_hub_id(cache, tmp_path, capsys):
    from PIL import Image

    from app.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (40, 30), (200, 40, 40)).save(folder / "bird.png")
    out = ["--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main(["explain", str(folder), "--model", TIMM_ID, *out]) == 0
    assert list((tmp_path / "out").rglob("*.npy"))
    assert main(["explain", str(folder), "--model", CLIP_ID, *out]) == 2
    assert f"{CLIP_ID}@cub200" in capsys.readouterr().err


def test_ui_turns_typed_ids_into_registry_names():
    from app.ui.hub_loader import hub_model_name

    assert hub_model_name("resnet50.a1_in1k", "classifier") == "timm:resnet50.a1_in1k"
    assert hub_model_name("timm:timm/resnet50.a1_in1k", "classifier") == "timm:resnet50.a1_in1k"
    assert hub_model_name("hf-hub:imageomics/bioclip", "classifier", "birds525") == (
        "hf-hub:imageomics/bioclip@birds525"
    )
    assert hub_model_name("imageomics/bioclip", "concepts") == "hf-hub:imageomics/bioclip"
    custom = hub_model_name("hf-hub:org/clip", "classifier", "custom", "Fox Sparrow\nSong Sparrow")
    assert custom.startswith("hf-hub:org/clip@list-")
    assert hub_models.class_list(custom.partition("@")[2])[0] == ["Fox Sparrow", "Song Sparrow"]
    with pytest.raises(ValueError, match="concepts tab needs an open_clip model"):
        hub_model_name("timm:resnet50.a1_in1k", "concepts")
    with pytest.raises(ValueError, match="at least two class names"):
        hub_model_name("hf-hub:org/clip", "classifier", "custom", "only one")


def test_hanging_proxy_gives_up_fast(cache, online, monkeypatch):
    """The issue's setup: an HTTPS_PROXY that accepts and never answers."""
    from huggingface_hub.utils import close_session

    with hanging_server() as hanging:
        monkeypatch.setenv("HTTPS_PROXY", hanging)
        monkeypatch.setenv("HTTP_PROXY", hanging)
        online("https://huggingface.co")
        close_session()  # a new client picks the proxy up from the environment
        registry = _registry()
        started = time.monotonic()
        model = registry.get("birds525-dinov2")
        seconds = time.monotonic() - started
    close_session()
    assert model.name == "demo-cnn" and seconds < 15.0, seconds
    assert registry.notice("birds525-dinov2") == (
        "birds525-dinov2 unavailable (Hub unreachable, not in the local cache); serving demo-cnn."
    )
