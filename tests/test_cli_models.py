"""The batch CLI explains the model asked for, or stops and says why — never another one."""

from __future__ import annotations

import torch
from PIL import Image

from app.cli import main
from app.models import registry as registry_module
from app.models.adapters.backbones import build_backbone
from app.models.adapters.linear_head import save_head
from app.models.registry import ModelSpec
from app.models.zoo.demo_cnn import load_demo_cnn


def _photos(tmp_path, count: int = 2):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(count):
        Image.new("RGB", (40, 30), (200, 40 * index, 40)).save(folder / f"bird{index}.png")
    return folder


def test_explain_refuses_to_replace_a_model_that_cannot_load(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FINERCAM_CUB_HEAD", raising=False)
    out = tmp_path / "out"
    code = main(
        [
            "explain",
            str(_photos(tmp_path)),
            "--model",
            "cub200-linear",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "never uses another model in place of 'cub200-linear'" in err
    assert "FINERCAM_CUB_HEAD" in err
    assert not list(out.rglob("*.npy"))


def test_explain_with_a_trained_head_by_path(tmp_path, capsys):
    backbone = build_backbone("demo-tinyclip", "cpu")
    classes = ["Fox Sparrow", "Song Sparrow", "House Finch"]
    torch.manual_seed(0)
    head = tmp_path / "my-head"
    save_head(
        head, torch.randn(3, backbone.feature_dim), torch.zeros(3), classes, "demo-tinyclip", 64
    )
    out = tmp_path / "out"
    code = main(
        [
            "explain",
            str(_photos(tmp_path, 1)),
            "--head",
            str(head),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    manifest = (out / "explanations.csv").read_text()
    assert any(name in manifest for name in classes)
    assert len(list(out.rglob("*.npy"))) == 2


def test_a_model_that_cannot_explain_is_reported_once(tmp_path, monkeypatch, capsys):
    """A model failure (here: no spatial map) stops the run with the model's message,
    instead of marking every image as unreadable."""

    def build(settings):
        model = load_demo_cnn("cpu")

        def no_grid(activation):
            raise ValueError("broken-model: the last stage gives no spatial map to explain")

        monkeypatch.setattr(model, "to_grid", no_grid)
        return model

    spec = ModelSpec(
        "broken-model", "a model without a spatial map", "classifier", build, offline=True
    )
    monkeypatch.setitem(registry_module._SPECS, "broken-model", spec)
    out = tmp_path / "out"
    code = main(
        [
            "explain",
            str(_photos(tmp_path, 3)),
            "--model",
            "broken-model",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--no-progress",
            "--workers",
            "0",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("gives no spatial map") == 1 and "cannot explain images" in err
    assert "could not be read" not in err
