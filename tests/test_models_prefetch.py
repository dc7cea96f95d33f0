"""python -m app.models.prefetch: what it fetches, and a clear failure offline."""

from __future__ import annotations

from app.config import Settings
from app.models import prefetch


def test_default_models_are_the_downloading_ones():
    names = prefetch.default_models(Settings())
    assert {"clip-vit-b16", "cub200-clip-zeroshot", "vgg16bn-imagenet", "resnet50-imagenet"} <= set(
        names
    )
    assert not {"demo-cnn", "demo-tinyclip", "cub200-linear"} & set(names)
    assert "cub200-linear" in prefetch.default_models(Settings(cub_head="org/repo"))


def test_prefetch_fails_clearly_without_network(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    code = prefetch.main(["--models", "resnet50-imagenet", "no-such-model"])
    assert code == 1
    text = caplog.text
    assert "FAILED resnet50-imagenet" in text and "resnet50" in text
    assert "unknown model 'no-such-model'" in text
