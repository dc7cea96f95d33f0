"""python -m app.train.head end to end on tiny generated datasets (offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from app.models.adapters.linear_head import load_head, load_linear_model
from app.train import head as train_head

COLOURS = {"red_bird": (220, 30, 30), "green_bird": (30, 200, 40), "blue_bird": (30, 60, 220)}


def _image(colour, rng) -> Image.Image:
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (40, 48, 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


@pytest.fixture(scope="module")
def timm_spec(tmp_path_factory):
    """A real timm architecture (vit_tiny) with random weights saved locally."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path_factory.mktemp("backbone") / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return f"timm:vit_tiny_patch16_224@{path}"


def test_train_head_on_an_image_folder(tmp_path, timm_spec, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "folder"
    for name, colour in COLOURS.items():
        (data / name).mkdir(parents=True)
        for i in range(6):
            _image(colour, rng).save(data / name / f"{i}.png")
    out = tmp_path / "head"
    report = train_head.main(
        [
            "--data",
            str(data),
            "--out",
            str(out),
            "--backbone",
            timm_spec,
            "--input-size",
            "32",
            "--epochs",
            "40",
            "--lr",
            "0.05",
            "--val-fraction",
            "0.34",
            "--device",
            "cpu",
        ]
    )
    assert "train top-1" in capsys.readouterr().out
    for name in ("head.safetensors", "classes.json", "report.json"):
        assert (out / name).is_file()
    saved = json.loads((out / "report.json").read_text())
    assert saved["num_classes"] == 3 and saved["dataset"] == "ImageFolder"
    assert saved["train"]["images"] == 12 and saved["test"]["images"] == 6
    assert saved["train"]["top1"] == 1.0 and saved["test"]["top1"] >= 2 / 3
    assert set(saved["test"]["per_class"]) == {"blue_bird", "green_bird", "red_bird"}
    assert report["input_size"] == [32, 32]
    weight, _, classes, metadata = load_head(str(out))
    assert classes == sorted(COLOURS) and weight.shape == (3, 192)
    assert metadata["backbone"] == timm_spec and metadata["input_size"] == "32x32"

    # the app's adapter loads the head with its backbone and reproduces the training accuracy
    model = load_linear_model(str(out), "cpu")
    assert list(model.labels) == sorted(COLOURS)
    correct = 0
    for label, name in enumerate(model.labels):
        for path in sorted((data / name).glob("*.png")):
            with Image.open(path) as image:
                correct += int(model.logits(model.preprocess(image)).argmax()) == label
    assert correct >= 16  # 12/12 train + most of the 6 held out


def test_train_head_on_a_cub_folder(tmp_path, timm_spec):
    rng = np.random.default_rng(1)
    root = tmp_path / "CUB_200_2011"
    raw = ["001.Black_footed_Albatross", "009.Brewer_Blackbird", "141.Artic_Tern"]
    lines = {"classes": [], "images": [], "labels": [], "split": []}
    image_id = 0
    for class_id, (folder, colour) in enumerate(zip(raw, COLOURS.values(), strict=True), start=1):
        lines["classes"].append(f"{class_id} {folder}")
        (root / "images" / folder).mkdir(parents=True)
        for i in range(5):
            image_id += 1
            _image(colour, rng).save(root / "images" / folder / f"img_{i}.jpg")
            lines["images"].append(f"{image_id} {folder}/img_{i}.jpg")
            lines["labels"].append(f"{image_id} {class_id}")
            lines["split"].append(f"{image_id} {int(i < 3)}")
    for key, name in [
        ("classes", "classes.txt"),
        ("images", "images.txt"),
        ("labels", "image_class_labels.txt"),
        ("split", "train_test_split.txt"),
    ]:
        (root / name).write_text("\n".join(lines[key]) + "\n")
    out = tmp_path / "cub-head"
    report = train_head.main(
        [
            "--data",
            str(tmp_path),
            "--out",
            str(out),
            "--backbone",
            timm_spec,
            "--input-size",
            "32",
            "--epochs",
            "30",
            "--lr",
            "0.05",
            "--device",
            "cpu",
        ]
    )
    assert report["dataset"] == "CUB_200_2011"
    assert report["train"]["images"] == 9 and report["test"]["images"] == 6
    assert json.loads((out / "classes.json").read_text()) == [
        "Black-footed Albatross",
        "Brewer's Blackbird",
        "Arctic Tern",
    ]
    assert report["test"]["top1"] >= 2 / 3


def test_train_head_refuses_a_folder_without_classes(tmp_path):
    with pytest.raises(ValueError, match="no class folders"):
        train_head.main(
            [
                "--data",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
                "--backbone",
                "timm:vit_tiny_patch16_224@random",
            ]
        )
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        train_head.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])


def test_fit_linear_folds_the_standardisation():
    torch.manual_seed(0)
    features = torch.randn(60, 5) * 10 + 3
    labels = (features[:, 0] > 3).long()
    weight, bias = train_head.fit_linear(features, labels, 2, epochs=60, lr=0.05)
    accuracy = ((features @ weight.T + bias).argmax(1) == labels).float().mean()
    assert accuracy > 0.95


def test_train_head_with_the_demo_tinyclip_backbone(tmp_path):
    """The offline tiny CLIP as backbone, on synthetic look-alike birds."""
    from app.models.adapters.clip import tinyclip_engine
    from app.synthbirds import SPECIES_NAMES, render_sample

    data = tmp_path / "birds"
    species = [0, 3, 6]
    for s in species:
        folder = data / "train" / SPECIES_NAMES[s]
        folder.mkdir(parents=True)
        (data / "test" / SPECIES_NAMES[s]).mkdir(parents=True)
        for i in range(6):
            split = "train" if i < 4 else "test"
            render_sample(s, 100 * s + i).image.save(data / split / SPECIES_NAMES[s] / f"{i}.png")
    out = tmp_path / "head"
    report = train_head.main(
        [
            "--data",
            str(data),
            "--out",
            str(out),
            "--backbone",
            "demo-tinyclip",
            "--epochs",
            "30",
            "--lr",
            "0.05",
            "--device",
            "cpu",
        ]
    )
    assert report["train"]["images"] == 12 and report["test"]["images"] == 6
    assert report["train"]["top1"] == 1.0
    model = load_linear_model(str(out), "cpu")
    assert list(model.labels) == sorted(SPECIES_NAMES[s] for s in species)
    assert model.trunk_key == tinyclip_engine("cpu").key  # shares the demo CLIP's trunk cache
