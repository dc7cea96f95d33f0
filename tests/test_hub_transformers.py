"""`transformers` image classifiers by plain Hub id, through the real loading code, offline.

The tests write a Hub cache (``HF_HUB_CACHE`` layout) holding a tiny random classifier of each
supported family (``save_pretrained`` safetensors, ``id2label``, a preprocessor config) and load
each by ``org/name`` with ``HF_HUB_OFFLINE=1``: library detection, policy, preprocessing, split,
explanation of a non-square photo, and Grad-CAM against pytorch-grad-cam on the same model with
the ``reshape_transform`` a user would write.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from app.config import Settings
from app.explain.combine import Contrast
from app.explain.gradients import compute_entry
from app.explain.methods import get_method
from app.explain.sanity import sanity_check
from app.explain.service import ExplainSettings, ExplanationService, available_methods
from app.models.adapters.hf_transformers import VIT_FAMILIES, TransformersViTSplit
from app.models.hub import detect
from app.models.hub import policy as hub
from app.models.registry import ModelLoadError, ModelRegistry
from tests.hubfixtures import (
    TIMM_LABELS,
    TRANSFORMERS_FAMILIES,
    offline_hub,
    tiny_open_clip_files,
    tiny_timm_files,
    tiny_timm_token_files,
    tiny_transformers_files,
    write_repo,
)

FAMILIES = list(TRANSFORMERS_FAMILIES)


def repo_of(family: str) -> str:
    return f"finercam-test/tiny-{family.replace('_', '-')}"


@pytest.fixture(scope="module")
def family_files():
    return {family: tiny_transformers_files(family) for family in FAMILIES}


@pytest.fixture
def cache(tmp_path, monkeypatch, family_files):
    """A fresh offline Hub cache with every tiny family (and a timm and an open_clip repo)."""
    folder = tmp_path / "hub"
    for family, files in family_files.items():
        write_repo(folder, repo_of(family), files)
    with offline_hub(monkeypatch, folder):
        yield folder


def _registry() -> ModelRegistry:
    return ModelRegistry(Settings(device="cpu"))


@pytest.mark.parametrize("family", FAMILIES)
def test_family_by_plain_id_is_explained(cache, family, rgb_image):
    repo = repo_of(family)
    registry = _registry()
    model = registry.get(repo)
    assert model.name == repo and list(model.labels) == TIMM_LABELS  # id2label
    x = model.preprocess(rgb_image)
    with torch.no_grad():  # the ModelOutput's logits, from the model transformers builds
        assert torch.allclose(model.logits(x), model.model(pixel_values=x).logits, atol=1e-5)
    service = ExplanationService(registry.get)
    explanation = service.explain(repo, rgb_image, ExplainSettings(method="gradcam", top_t=2))
    assert explanation.cam_overlay.shape[:2] == (rgb_image.height, rgb_image.width)
    assert explanation.finer_overlay is not None and explanation.target.name in TIMM_LABELS
    names = {method.name for method in available_methods(model)}
    attention = {"legrad", "attention-gradient"}
    assert attention <= names if family in VIT_FAMILIES else not attention & names
    if family in VIT_FAMILIES:
        for method in sorted(attention):
            shown = service.explain(repo, rgb_image, ExplainSettings(method=method, top_t=2))
            assert shown.finer_overlay.shape[:2] == (rgb_image.height, rgb_image.width)


def _hf_forward(model: torch.nn.Module) -> torch.nn.Module:
    """What a pytorch-grad-cam user writes for a `transformers` model: logits, not ModelOutput."""

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(pixel_values=x).logits

    return Logits()


def _anchor_layer_and_reshape(adapter):
    """The target module and ``reshape_transform`` for pytorch-grad-cam on the same layer."""
    split = adapter.split
    if isinstance(split, TransformersViTSplit):
        last = split.layers[-1]
        layer = last.layernorm_before if hasattr(last, "layernorm_before") else last.norm1
        h, w = split.window

        def tokens_to_grid(t: torch.Tensor) -> torch.Tensor:
            return t[:, split.prefix :].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)

        return layer, tokens_to_grid
    if split.family.tokens:  # Swin: (N, L, C) tokens of a square window grid

        def swin_to_grid(t: torch.Tensor) -> torch.Tensor:
            side = int(round(t.shape[1] ** 0.5))
            return t.reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)

        return split.target, swin_to_grid
    return split.target, None


@pytest.mark.parametrize("family", FAMILIES)
def test_gradcam_matches_pytorch_grad_cam(cache, family, rgb_image):
    adapter = _registry().get(repo_of(family))
    x = adapter.preprocess(rgb_image)
    entry = compute_entry(adapter, x, range(adapter.num_classes))
    for target in adapter.logits(x)[0].argsort(descending=True).tolist():  # a non-empty map
        ours = np.maximum(get_method("gradcam").raw_map(entry, Contrast(target)), 0)
        if ours.max() > 0:
            break
    ours = scale_cam_image(scale_cam_image(ours, (x.shape[-1], x.shape[-2])))  # as the anchor
    layer, reshape = _anchor_layer_and_reshape(adapter)
    adapter.model.requires_grad_(True)  # as a user's model is; the adapter froze it
    try:
        with GradCAM(_hf_forward(adapter.model), [layer], reshape_transform=reshape) as cam:
            anchor = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
    finally:
        adapter.model.requires_grad_(False)
    assert ours.shape == anchor.shape and float(ours.max()) > 0.5
    assert np.abs(ours - anchor).max() <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_sanity_check_randomises_the_classifier_first_and_changes_the_maps(
    cache, family, rgb_image
):
    model = _registry().get(repo_of(family))
    layers = model.cascade_layers()
    head = "cls_classifier+distillation_classifier" if family == "deit" else "classifier"
    assert layers[0][0] == head and len(layers) >= 4
    declared = {id(p) for _, module in layers for p in module.parameters()}
    drawn = {  # every weight PyTorch can redraw lies in a declared layer
        id(p)
        for module in model.model.modules()
        if callable(getattr(module, "reset_parameters", None))
        for p in module.parameters(recurse=False)
    }
    assert drawn <= declared
    served = {name: p.clone() for name, p in model.model.named_parameters()}
    scores = sanity_check(model, [rgb_image], ["gradcam"], top_t=2, depth=2)
    assert [s.layer for s in scores if s.map == "cam"] == [name for name, _ in layers[:2]]
    assert all(torch.equal(p, served[name]) for name, p in model.model.named_parameters())
    # Measured on these seeded tiny models: min(ρ, SSIM) at most 0.74 (RegNet's CAM, 2 layers).
    assert all(min(s.spearman, s.ssim) < 0.9 for s in scores), scores


def test_library_detected_from_files(cache, rgb_image):
    """timm and open_clip repos load by plain id too; a repo with neither is refused clearly;
    a repo asking for its own code is refused before anything runs."""
    write_repo(cache, "finercam-test/plain-timm", tiny_timm_files())
    write_repo(cache, "finercam-test/plain-clip", tiny_open_clip_files())
    write_repo(cache, "finercam-test/no-library", {"README.md": b"# nothing to load"})
    files = dict(tiny_transformers_files("vit"))
    config = json.loads(files["config.json"])
    files["config.json"] = json.dumps({**config, "auto_map": {"AutoModel": "x.Model"}}).encode()
    write_repo(cache, "finercam-test/remote-code", files)
    assert detect.detect_library("finercam-test/plain-timm") == "timm"
    assert detect.detect_library("finercam-test/plain-clip") == "open_clip"
    assert detect.detect_library(repo_of("swin")) == "transformers"
    registry = _registry()
    assert list(registry.get("finercam-test/plain-timm").labels) == TIMM_LABELS
    concepts = registry.get("finercam-test/plain-clip").with_prompts(["a bird", "a red crown"])
    assert concepts.num_classes == 2
    with pytest.raises(ValueError, match="cannot tell which library loads finercam-test/no-lib"):
        registry.get("finercam-test/no-library")
    with pytest.raises(ModelLoadError, match="needs its own code .* never run"):
        registry.get("finercam-test/remote-code")


def test_plain_ids_obey_the_allow_list_and_the_cache(cache, monkeypatch):
    monkeypatch.setenv("FINERCAM_HUB_MODELS", "imageomics/*")
    with pytest.raises(ValueError, match="not on this Space's allow-list"):
        _registry().get(repo_of("vit"))
    monkeypatch.setenv("FINERCAM_HUB_MODELS", "*")
    with pytest.raises(ValueError, match="not in the Hub cache"):
        _registry().get("someone/not-cached")
    assert hub.plain_repo_id("a/b/c") is None and hub.plain_repo_id("timm:a/b") is None


def test_timm_vit_classifier_by_hub_id_offers_attention_methods(cache, rgb_image):
    write_repo(cache, "finercam-test/tiny-timm-vit", tiny_timm_files())
    registry = _registry()
    name = "timm:finercam-test/tiny-timm-vit"
    model = registry.get(name)
    assert {"legrad", "attention-gradient"} <= {m.name for m in available_methods(model)}
    service = ExplanationService(registry.get)
    explanation = service.explain(name, rgb_image, ExplainSettings(method="legrad", top_t=2))
    assert explanation.finer_overlay.shape[:2] == (rgb_image.height, rgb_image.width)


def test_ui_turns_a_plain_transformers_id_into_its_name(cache):
    from app.ui.hub_loader import hub_model_name

    assert hub_model_name(repo_of("deit"), "classifier") == repo_of("deit")


def test_importing_the_app_does_not_import_transformers():
    code = (
        "import sys, app.ui.app, app.cli.main, app.models.hub.loading; "
        "print('transformers' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("kind", ["eva02", "levit"])
def test_timm_eva02_and_levit_are_explained(cache, kind, rgb_image):
    """Their last stage gives tokens (rotary-position EVA-02, attention-downsampled LeViT): they
    are explained on a 4 x 4 grid, the logits are timm's own, and both offer LeGrad and
    attention-gradient (EVA-02 through every block, LeViT through its last stage)."""
    repo = f"finercam-test/tiny-{kind}"
    write_repo(cache, repo, tiny_timm_token_files(kind))
    registry = _registry()
    model = registry.get(repo)  # detected as timm from its config.json
    assert list(model.labels) == TIMM_LABELS
    x = model.preprocess(rgb_image)
    assert torch.allclose(model.logits(x), model.model(x), atol=1e-5)
    assert tuple(model.to_grid(model.trunk(x)).shape[-2:]) == (4, 4)  # 56/14, 256/64
    available = {m.name: m.label for m in available_methods(model)}
    assert {"legrad", "attention-gradient"} <= set(available)
    service = ExplanationService(registry.get)
    for method in ("gradcam", "legrad", "attention-gradient"):
        settings = ExplainSettings(method=method, gamma=0.6, top_t=2)
        explanation = service.explain(repo, rgb_image, settings)
        assert explanation.cam_overlay.shape[:2] == (rgb_image.height, rgb_image.width)
        assert explanation.target.name in TIMM_LABELS
        assert explanation.method == available[method]


def test_hub_ids_say_before_loading_whether_attention_methods_exist(cache):
    """The spec of a Hub id carries the attention hint from its config (timm: the architecture
    built on the meta device; transformers: model_type; open_clip: the vision tower), so the
    method dropdown is right before the model loads; loading agrees with it."""
    from app.models.registry import get_spec
    from app.ui.tab_glue import method_choices
    from tests.hubfixtures import tiny_timm_cnn_files

    repos = {
        "finercam-test/tiny-eva02": (tiny_timm_token_files("eva02"), True),
        "finercam-test/tiny-levit": (tiny_timm_token_files("levit"), True),
        "finercam-test/tiny-timm-vit": (tiny_timm_files(), True),
        "finercam-test/tiny-timm-resnet": (tiny_timm_cnn_files(), False),
        "finercam-test/tiny-clip": (tiny_open_clip_files(), True),
    }
    for repo, (files, _) in repos.items():
        write_repo(cache, repo, files)
    expected = {repo: offers for repo, (_, offers) in repos.items()}
    expected.update({repo_of(f): f in VIT_FAMILIES for f in ("deit", "dinov2", "resnet", "swin")})
    registry = _registry()
    service = ExplanationService(registry.get)
    for repo, offers in expected.items():
        name = f"hf-hub:{repo}" if repo.endswith("clip") else repo
        assert get_spec(name).attention is offers, repo
        assert not registry.loaded(name)
        before = {value for _, value in method_choices(service, name)}
        assert ("legrad" in before) is offers, repo
        loaded = {m.name for m in available_methods(registry.get(name))}
        assert ("legrad" in loaded) is offers, repo
