"""The batch CLI (``python -m app.cli``) on tiny generated datasets with a test-only model.

Checks that outputs exist, the CSV has one row per image and map, a second
run skips finished work (the model is not run again), bad files are listed and the run goes on,
bad paths / empty folders give a clear message and exit code 2.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from app.cli import main
from app.cli.datasets import LabelResolver, clean_label
from app.models import registry
from app.models.base import ExplainableModel
from app.models.registry import ModelSpec

MODEL = "tiny-cli-cnn"
REPO = Path(__file__).resolve().parents[1]


class CountingAdapter(ExplainableModel):
    """A small random CNN with chosen labels that counts trunk runs (= model passes)."""

    trunk_key = MODEL

    def __init__(self, labels: list[str]) -> None:
        torch.manual_seed(0)
        self.name = MODEL
        self.labels = list(labels)
        self.device = torch.device("cpu")
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, len(labels)),
        ).eval()
        self.trunk_calls = 0

    def preprocess(self, image):
        array = np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1)[None] * 4 - 2

    def trunk(self, x):
        self.trunk_calls += 1
        return self.net[:5](x)

    def tail(self, activation):
        return self.net[5:](activation)

    def class_embeddings(self):
        return self.net[-1].weight


@pytest.fixture
def tiny_model(monkeypatch):
    """Registers ``tiny-cli-cnn`` (labels: Black-footed Albatross, Laysan Albatross, Class 2..5)
    for one test; the real adapter modules are not imported."""
    adapter = CountingAdapter(
        ["Black-footed Albatross", "Laysan Albatross", "Class 2", "Class 3", "Class 4", "Class 5"]
    )
    monkeypatch.setattr(registry, "ADAPTER_MODULES", ())
    spec = ModelSpec(
        MODEL, "test model", "classifier", build=lambda settings: adapter, offline=True
    )
    monkeypatch.setitem(registry._SPECS, MODEL, spec)
    return adapter


def _image(path: Path, seed: int, size=(40, 48)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """5 good images in 3 class folders (CUB-style, plain and lower-case names) + 1 corrupt."""
    root = tmp_path / "data"
    _image(root / "001.Black_footed_Albatross" / "a.png", 0)
    _image(root / "001.Black_footed_Albatross" / "b.jpg", 1)
    _image(root / "002.Laysan_Albatross" / "c.png", 2, size=(64, 40))
    _image(root / "class_3" / "d.png", 3)
    _image(root / "class_3" / "nested" / "e.png", 4)
    (root / "class_3" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "class_3" / "notes.txt").write_text("ignored: not an image extension")
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_labels_from_folder_names_are_cleaned_and_matched_loosely():
    assert clean_label("001.Black_footed_Albatross") == "Black footed Albatross"
    assert clean_label("class_3") == "class 3"
    resolve = LabelResolver(["Black-footed Albatross", "Laysan Albatross", "Class 3"])
    assert resolve("001.Black_footed_Albatross") == 0
    assert resolve("laysan albatross") == 1
    assert resolve("class_3") == 2
    assert resolve("Sooty Albatross") is None
    assert LabelResolver(["Brewer's Blackbird"])("009.Brewer_Blackbird") == 0


def test_evaluate_writes_one_row_per_image_and_map_and_resumes(
    tiny_model, image_folder, tmp_path, capsys
):
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        str(image_folder),
        "--model",
        MODEL,
        "--method",
        "gradcam",
        "--method",
        "layercam",
        "--gamma",
        "0,0.6",
        "--steps",
        "4",
        "--out",
        str(out),
        "--workers",
        "2",
        "--no-progress",
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "could not be processed" in err

    rows = _rows(out / "per_image.csv")
    images = {r["image"] for r in rows}
    assert len(images) == 5 and not any("broken" in i for i in images)
    # per image: {gradcam, layercam} x {plain, Finer γ=0.6}
    assert len(rows) == 5 * 2 * 2
    assert {(r["method"], r["variant"], r["gamma"]) for r in rows} == {
        ("gradcam", "plain", "0"),
        ("gradcam", "finer", "0.6"),
        ("layercam", "plain", "0"),
        ("layercam", "finer", "0.6"),
    }
    for row in rows:
        assert 0 <= float(row["deletion_auc"]) <= 1 and 0 <= float(row["insertion_auc"]) <= 1
        assert row["energy_inside"] == ""  # an ImageFolder has no regions
    labels = {r["image"].split("/")[0]: r["label_index"] for r in rows}
    assert labels["001.Black_footed_Albatross"] == "0" and labels["002.Laysan_Albatross"] == "1"
    assert all(r["target_index"] == r["label_index"] for r in rows)  # --target label
    assert "broken.jpg" in (out / "bad_files.txt").read_text()
    summary = _rows(out / "summary.csv")
    assert [(s["method"], s["variant"], s["gamma"], s["n"]) for s in summary] == [
        ("gradcam", "plain", "0", "5"),
        ("gradcam", "finer", "0.6", "5"),
        ("layercam", "plain", "0", "5"),
        ("layercam", "finer", "0.6", "5"),
    ]
    assert (out / "gamma_sweep.png").stat().st_size > 1000
    assert "| Grad-CAM" in (out / "summary.md").read_text()

    runs = tiny_model.trunk_calls
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "5 of 6 image(s) already scored" in err
    assert tiny_model.trunk_calls == runs  # nothing was run again
    assert len(_rows(out / "per_image.csv")) == 20

    # A wider sweep only adds the missing rows.
    wider = [a if a != "0,0.6" else "0,0.6,1" for a in argv]
    assert main(wider) == 0
    rows = _rows(out / "per_image.csv")
    assert len(rows) == 5 * 2 * 3 and sum(r["gamma"] == "1" for r in rows) == 10


def test_evaluate_output_inside_the_dataset_is_not_a_class(tiny_model, image_folder, capsys):
    argv = [
        "evaluate",
        str(image_folder),
        "--model",
        MODEL,
        "--steps",
        "2",
        "--method",
        "gradcam",
        "--out",
        str(image_folder / "results"),
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main(argv) == 0 and main(argv) == 0  # the second run sees gamma_sweep.png there
    err = capsys.readouterr().err
    assert "does not know" not in err and "'results'" not in err
    rows = _rows(image_folder / "results" / "per_image.csv")
    assert len(rows) == 5 * 2 and not any(r["image"].startswith("results") for r in rows)


def test_evaluate_refuses_to_mix_settings_in_one_output_folder(
    tiny_model, image_folder, tmp_path, capsys
):
    out = tmp_path / "eval"
    base = [
        "evaluate",
        str(image_folder),
        "--model",
        MODEL,
        "--steps",
        "2",
        "--out",
        str(out),
        "--workers",
        "0",
        "--no-progress",
        "--limit",
        "2",
    ]
    assert main(base) == 0
    assert main(base + ["--top-t", "2"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(base + ["--top-t", "2", "--overwrite"]) == 0


def test_explain_writes_maps_and_overlays_and_skips_finished_images(
    tiny_model, image_folder, tmp_path, capsys
):
    out = tmp_path / "maps"
    argv = [
        "explain",
        str(image_folder),
        "--model",
        MODEL,
        "--method",
        "gradcam,layercam",
        "--gamma",
        "0.3,1",
        "--out",
        str(out),
        "--workers",
        "1",
        "--no-progress",
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "could not be processed" in err
    folder = out / "002.Laysan_Albatross" / "c"
    for method in ("gradcam", "layercam"):
        cam = np.load(folder / f"{method}_cam.npy")
        assert (
            cam.shape == (64, 40) and cam.dtype == np.float32 and 0 <= cam.min() <= cam.max() <= 1
        )
        assert Image.open(folder / f"{method}_cam.png").size == (40, 64)
        for g in ("0.3", "1"):
            assert np.load(folder / f"{method}_finer_g{g}.npy").shape == (64, 40)
            assert (folder / f"{method}_finer_g{g}.png").is_file()
    assert (out / "class_3" / "nested" / "e" / "gradcam_cam.npy").is_file()
    manifest = _rows(out / "explanations.csv")
    assert len(manifest) == 5 * 2 * 2  # images x methods x gammas

    runs = tiny_model.trunk_calls
    # one gradient pass per image for both methods and both γ, and per row one batched
    # forward of its two masked maps (the faithfulness columns)
    assert runs == 5 + 5 * 2 * 2
    assert main(argv) == 0
    assert "5 of 6 image(s) already done" in capsys.readouterr().err
    assert tiny_model.trunk_calls == runs and len(_rows(out / "explanations.csv")) == 20


def test_no_overlays_writes_the_same_maps_without_pngs_and_resumes(
    tiny_model, image_folder, tmp_path
):
    argv = [
        "explain",
        str(image_folder),
        "--model",
        MODEL,
        "--method",
        "gradcam,layercam",
        "--gamma",
        "0.3,1",
        "--workers",
        "0",
        "--no-progress",
    ]
    with_pngs, without = tmp_path / "with", tmp_path / "without"
    assert main([*argv, "--out", str(with_pngs)]) == 0
    assert main([*argv, "--out", str(without), "--no-overlays"]) == 0
    npys = sorted(p.relative_to(with_pngs) for p in with_pngs.rglob("*.npy"))
    assert len(npys) == 5 * 2 * 3  # images x methods x (CAM + 2 γ)
    assert sorted(p.relative_to(without) for p in without.rglob("*.npy")) == npys
    assert all((with_pngs / p).read_bytes() == (without / p).read_bytes() for p in npys)
    assert not list(without.rglob("*.png"))
    assert _rows(with_pngs / "explanations.csv") == [
        {
            **row,
            "cam_npy": row["cam_npy"].replace(str(without), str(with_pngs)),
            "finer_npy": row["finer_npy"].replace(str(without), str(with_pngs)),
        }
        for row in _rows(without / "explanations.csv")
    ]
    runs = tiny_model.trunk_calls
    assert main([*argv, "--out", str(without), "--no-overlays"]) == 0
    assert tiny_model.trunk_calls == runs  # .npy-only outputs count as done


def test_an_image_whose_files_cannot_be_written_gets_no_row(
    tiny_model, image_folder, tmp_path, capsys
):
    out = tmp_path / "maps"
    (out / "class_3" / "d" / "gradcam_cam.png").mkdir(parents=True)  # a folder in the file's way
    argv = [
        "explain",
        str(image_folder),
        "--model",
        MODEL,
        "--out",
        str(out),
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "could not write its files" in err and "d.png" in err
    rows = _rows(out / "explanations.csv")
    assert len(rows) == 4 and "class_3/d.png" not in [r["image"] for r in rows]


def test_explain_never_picks_up_its_own_outputs(tiny_model, tmp_path):
    _image(tmp_path / "x.png", 7)
    argv = [
        "explain",
        str(tmp_path),
        "--model",
        MODEL,
        "--out",
        str(tmp_path / "maps"),
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main(argv) == 0 and main(argv) == 0
    assert [r["image"] for r in _rows(tmp_path / "maps" / "explanations.csv")] == ["x.png"]


def test_explain_takes_single_files_and_a_named_target(tiny_model, tmp_path):
    _image(tmp_path / "x.png", 7)
    out = tmp_path / "o"
    argv = [
        "explain",
        str(tmp_path / "x.png"),
        "--model",
        MODEL,
        "--target",
        "Class 3",
        "--out",
        str(out),
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main(argv) == 0
    row = _rows(out / "explanations.csv")[0]
    assert row["target"] == "Class 3" and (out / "x" / "gradcam_finer_g0.6.npy").is_file()


@pytest.mark.parametrize("command", ["explain", "evaluate"])
def test_bad_paths_and_empty_folders_exit_2_with_a_clear_message(
    tiny_model, tmp_path, capsys, command
):
    assert (
        main([command, str(tmp_path / "nope"), "--model", MODEL, "--out", str(tmp_path / "o")]) == 2
    )
    assert "path not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert (
        main([command, str(tmp_path / "empty"), "--model", MODEL, "--out", str(tmp_path / "o")])
        == 2
    )
    assert "no images found" in capsys.readouterr().err


def test_unknown_model_method_and_gamma_exit_2(tiny_model, image_folder, tmp_path, capsys):
    out = ["--out", str(tmp_path / "o")]
    assert main(["explain", str(image_folder), "--model", "no-such-model", *out]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    assert main(["explain", str(image_folder), "--model", MODEL, "--method", "magic", *out]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(["evaluate", str(image_folder), "--model", MODEL, "--gamma", "0,7", *out]) == 2
    assert "--gamma" in capsys.readouterr().err
    assert main(["explain", str(image_folder), "--model", MODEL, "--target", "Dodo", *out]) == 2
    assert "--target: unknown class name 'Dodo'" in capsys.readouterr().err
    assert (
        main(["explain", str(image_folder), "--model", MODEL, "--reference-mode", "manual", *out])
        == 2
    )
    assert "needs --references" in capsys.readouterr().err


def test_evaluate_and_explain_refuse_a_fallback_model(
    tiny_model, image_folder, tmp_path, monkeypatch, capsys
):
    def unavailable(settings):
        raise OSError("no head file")

    spec = ModelSpec("needs-a-head", "x", "classifier", build=unavailable, fallback=MODEL)
    monkeypatch.setitem(registry._SPECS, "needs-a-head", spec)
    out = ["--out", str(tmp_path / "o"), "--workers", "0", "--no-progress"]
    for command in ("evaluate", "explain"):
        assert main([command, str(image_folder), "--model", "needs-a-head", *out]) == 2
        err = capsys.readouterr().err
        assert "never uses another model in place of 'needs-a-head'" in err
        assert "no head file" in err
    assert not list((tmp_path / "o").rglob("*.npy"))


def test_a_folder_of_only_bad_files_exits_1_and_lists_them(tiny_model, tmp_path, capsys):
    root = tmp_path / "bad" / "Class_2"
    root.mkdir(parents=True)
    (root / "zero.png").write_bytes(b"")
    (root / "text.jpg").write_text("hello")
    argv = [
        "evaluate",
        str(tmp_path / "bad"),
        "--model",
        MODEL,
        "--out",
        str(tmp_path / "o"),
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "2 file(s) could not be processed" in err
    assert "zero.png: The file is empty" in err and "text.jpg" in err


def test_unknown_labels_are_reported_and_skipped_or_scored_as_predicted(
    tiny_model, tmp_path, capsys
):
    root = tmp_path / "data"
    _image(root / "Class_2" / "a.png", 0)
    _image(root / "Sooty_Albatross" / "b.png", 1)
    base = [
        "evaluate",
        str(root),
        "--model",
        MODEL,
        "--steps",
        "2",
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main(base + ["--out", str(tmp_path / "o1")]) == 0
    err = capsys.readouterr().err
    assert "labels that tiny-cli-cnn does not know: 'Sooty Albatross' (1)" in err
    assert {r["image"] for r in _rows(tmp_path / "o1" / "per_image.csv")} == {"Class_2/a.png"}

    assert main(base + ["--out", str(tmp_path / "o2"), "--target", "predicted"]) == 0
    rows = _rows(tmp_path / "o2" / "per_image.csv")
    assert len({r["image"] for r in rows}) == 2
    assert all(r["target_index"] == r["predicted_index"] for r in rows)

    only_unknown = tmp_path / "unknown"
    _image(only_unknown / "Sooty_Albatross" / "b.png", 1)
    argv = ["evaluate", str(only_unknown), "--model", MODEL, "--out", str(tmp_path / "o3")]
    assert main(argv) == 2
    assert "no image has a label that tiny-cli-cnn knows" in capsys.readouterr().err


def test_cub_layout_gives_labels_split_and_box_localization(tiny_model, tmp_path):
    cub = tmp_path / "CUB_200_2011"
    files = [
        ("001.Black_footed_Albatross/a.jpg", 1, 0),
        ("001.Black_footed_Albatross/b.jpg", 1, 1),
        ("002.Laysan_Albatross/c.jpg", 2, 0),
    ]
    for i, (rel, _, _) in enumerate(files):
        _image(cub / "images" / rel, i, size=(60, 80))
    (cub / "images.txt").write_text(
        "".join(f"{i} {rel}\n" for i, (rel, _, _) in enumerate(files, 1))
    )
    (cub / "image_class_labels.txt").write_text(
        "".join(f"{i} {c}\n" for i, (_, c, _) in enumerate(files, 1))
    )
    (cub / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    (cub / "train_test_split.txt").write_text(
        "".join(f"{i} {t}\n" for i, (_, _, t) in enumerate(files, 1))
    )
    (cub / "bounding_boxes.txt").write_text("1 10.0 5.0 40.0 30.0\n2 0 0 80 60\n3 20 10 30 20\n")
    (cub / "parts").mkdir()
    (cub / "parts" / "part_locs.txt").write_text("1 1 20 20 1\n1 2 0 0 0\n3 1 30 30 1\n")
    out = tmp_path / "o"
    base = [
        "evaluate",
        str(tmp_path),
        "--model",
        MODEL,
        "--steps",
        "2",
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main(base + ["--out", str(out)]) == 0
    rows = _rows(out / "per_image.csv")
    # split "test" = is_train 0: images 1 and 3
    assert {r["image"] for r in rows} == {
        "images/001.Black_footed_Albatross/a.jpg",
        "images/002.Laysan_Albatross/c.jpg",
    }
    assert {r["label"] for r in rows} == {"Black footed Albatross", "Laysan Albatross"}
    assert all(r["energy_inside"] != "" and r["pointing_game"] in ("0", "1") for r in rows)
    assert json.loads((out / "run.json").read_text())["region"] == "auto"
    assert (
        main(base + ["--out", str(tmp_path / "parts"), "--region", "parts", "--split", "all"]) == 0
    )
    assert len({r["image"] for r in _rows(tmp_path / "parts" / "per_image.csv")}) == 3


def test_synthbirds_are_scored_against_the_discriminative_part(tiny_model, tmp_path):
    out = tmp_path / "o"
    argv = [
        "evaluate",
        "--dataset",
        "synthbirds",
        "--count",
        "3",
        "--model",
        MODEL,
        "--target",
        "predicted",
        "--steps",
        "2",
        "--gamma",
        "0.6",
        "--out",
        str(out),
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main(argv) == 0
    rows = _rows(out / "per_image.csv")
    assert len(rows) == 3 * 2
    assert all(r["energy_inside"] != "" for r in rows)
    assert rows[0]["image"] == "synthbirds/test-seed1234/00000"


def test_python_dash_m_entry_point_prints_usage():
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "explain" in done.stdout and "evaluate" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "evaluate", "--steps", "x"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "invalid int value" in done.stderr


def _synthbirds_evaluate_argv(out: Path, count: int) -> list[str]:
    """``evaluate`` of demo-cnn on ``count`` synthetic birds, 4 curve steps, in-process."""
    return [
        "evaluate", "--dataset", "synthbirds", "--count", str(count), "--model", "demo-cnn",
        "--device", "cpu", "--steps", "4", "--out", str(out), "--workers", "0", "--no-progress",
    ]  # fmt: skip


def test_demo_cnn_on_synthbirds_resolves_every_label(tmp_path):
    out = tmp_path / "o"
    argv = _synthbirds_evaluate_argv(out, count=4)
    assert main(argv) == 0
    rows = _rows(out / "per_image.csv")
    assert len(rows) == 4 * 2 and all(r["label_index"] != "" for r in rows)
    assert all(r["energy_inside"] != "" for r in rows)


def test_explain_with_fgcam_writes_pixel_maps_under_their_own_names(tmp_path):
    from app.synthbirds.dataset import render_sample

    render_sample(0, 3).image.save(tmp_path / "bird.png")
    out = tmp_path / "o"
    argv = [
        "explain",
        str(tmp_path / "bird.png"),
        "--model",
        "demo-cnn",
        "--device",
        "cpu",
        "--fgcam",
        "--gamma",
        "1",
        "--out",
        str(out),
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main(argv) == 0
    high = np.load(out / "bird" / "gradcam-fgcam_finer_g1.npy")
    assert high.shape == (128, 128) and high.max() == pytest.approx(1.0)
    assert not (out / "bird" / "gradcam_cam.npy").exists()


def test_evaluate_with_fgcam_scores_pixel_maps_and_refuses_to_mix_with_plain_results(
    tmp_path, capsys
):
    out = tmp_path / "o"
    argv = _synthbirds_evaluate_argv(out, count=2)
    assert main([*argv, "--fgcam"]) == 0
    assert len(_rows(out / "per_image.csv")) == 2 * 2
    assert json.loads((out / "run.json").read_text())["fgcam"] == {"layer": 0, "denoise": False}
    assert main(argv) == 2
    assert "fgcam" in capsys.readouterr().err


def test_explain_gamma_auto_writes_the_chosen_gamma_per_image(tiny_model, image_folder, tmp_path):
    from app.explain.gamma import AUTO_CANDIDATES
    from app.explain.service import ExplainSettings, ExplanationService

    out = tmp_path / "auto"
    argv = [
        "explain",
        str(image_folder),
        "--model",
        MODEL,
        "--gamma",
        "auto,0.6",
        "--out",
        str(out),
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main(argv) == 0
    rows = _rows(out / "explanations.csv")
    auto = [r for r in rows if "_finer_auto-g" in r["finer_npy"]]
    assert len(auto) == 5 and len(rows) == 10
    service = ExplanationService(lambda name: tiny_model)
    for row in auto:
        gamma = float(row["gamma"])
        assert gamma in AUTO_CANDIDATES and row["finer_npy"].endswith(
            f"_finer_auto-g{row['gamma']}.npy"
        )
        assert Path(row["finer_npy"]).is_file() and "auto gamma" in row["notices"]
        image = Image.open(image_folder / row["image"]).convert("RGB")
        strip = service.gamma_strip(MODEL, image, ExplainSettings(), auto=True)
        assert strip.auto.gamma == gamma  # the per-image choice, not one γ for all
    assert main(argv) == 0 and len(_rows(out / "explanations.csv")) == 10  # resumes: all done


def test_explain_writes_the_faithfulness_of_both_maps_as_the_app_scores_them(
    tiny_model, image_folder, tmp_path
):
    from app.explain.inputs import load_image
    from app.explain.service import ExplainSettings, ExplanationService

    out = tmp_path / "scored"
    argv = [
        "explain",
        str(image_folder / "class_3" / "d.png"),
        "--model",
        MODEL,
        "--gamma",
        "0.4",
        "--faithfulness-k",
        "0.1",
        "--out",
        str(out),
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main(argv) == 0
    (row,) = _rows(out / "explanations.csv")
    image = load_image(image_folder / "class_3" / "d.png")
    live = ExplanationService(lambda name: tiny_model).faithfulness(
        MODEL, image, ExplainSettings(gamma=0.4), top_fraction=0.1
    )
    assert row["faithfulness_k"] == "0.1"
    expected = {
        "rd_cam": live.cam.relative_drop,
        "rd_finer": live.finer.relative_drop,
        "drop_cam": live.cam.probability_drop,
        "drop_finer": live.finer.probability_drop,
    }
    for column, value in expected.items():
        assert float(row[column]) == pytest.approx(value, rel=1e-5, abs=1e-6)
    off = tmp_path / "off"
    assert (
        main(
            [
                *argv[:-5],
                "--faithfulness-k",
                "0",
                "--out",
                str(off),
                "--workers",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    assert _rows(off / "explanations.csv")[0]["rd_cam"] == ""
    assert main([*argv[:-5], "--faithfulness-k", "2", "--out", str(off)]) == 2


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.[np][pn][yg]")}


def _same_outputs(ours: Path, theirs: Path) -> None:
    """The same files: maps equal to float tolerance (a batched pass may sum in another order);
    overlays equal but for a rare pixel whose map value sits on the edge of a colour-map step
    (the map is truncated to 256 levels before colouring): one step of jet at opacity 0.5."""
    mine, other = _outputs(ours), _outputs(theirs)
    assert sorted(mine) == sorted(other) and mine
    for name in mine:
        if name.endswith(".npy"):
            np.testing.assert_allclose(np.load(ours / name), np.load(theirs / name), atol=1e-6)
        else:
            a, b = (np.asarray(Image.open(root / name), dtype=int) for root in (ours, theirs))
            differ = np.abs(a - b).max(axis=-1)
            assert differ.max() <= 3 and (differ > 0).mean() < 0.01, name
    assert not list(ours.rglob(".*.tmp*"))


def _explain_argv(
    image_folder: Path, out: Path, *flags: str, gammas: str = "0.3,1,auto"
) -> list[str]:
    return [
        "explain",
        str(image_folder),
        "--model",
        MODEL,
        "--method",
        "gradcam,layercam",
        "--gamma",
        gammas,
        "--out",
        str(out),
        "--workers",
        "0",
        "--no-progress",
        *flags,
    ]


def test_batched_explain_writes_the_files_and_rows_of_one_at_a_time(
    tiny_model, image_folder, tmp_path, capsys
):
    single, batched = tmp_path / "single", tmp_path / "batched"
    assert main(_explain_argv(image_folder, single, "--batch-size", "1")) == 0
    single_runs = tiny_model.trunk_calls
    assert main(_explain_argv(image_folder, batched, "--batch-size", "4")) == 0
    # 6 files in batches of 4 (the broken one inside the first): 2 gradient passes instead of
    # 5, and the fixed-γ rows' faithfulness in one forward per batch instead of one per row
    # (5 images x 2 methods x 2 γ); the auto-γ rows and choices still run one forward each
    assert single_runs - (tiny_model.trunk_calls - single_runs) == (5 - 2) + (5 * 2 * 2 - 2)
    err = capsys.readouterr().err
    assert err.count("broken.jpg") == 4  # warned, then listed, by each run
    _same_outputs(batched, single)
    rows = _rows(batched / "explanations.csv")
    assert len(rows) == 5 * 2 * 3
    for mine, theirs in zip(rows, _rows(single / "explanations.csv"), strict=True):
        for column in ("cam_npy", "finer_npy"):
            mine[column] = mine[column].replace(str(batched), str(single))
        for column in ("target_probability", "rd_cam", "rd_finer", "drop_cam", "drop_finer"):
            assert float(mine.pop(column)) == pytest.approx(float(theirs.pop(column)), abs=1e-5)
        assert mine == theirs


def test_a_batch_is_scored_in_one_forward_with_the_numbers_of_one_at_a_time(
    tiny_model, image_folder, tmp_path
):
    single, batched = tmp_path / "single", tmp_path / "batched"
    assert main(_explain_argv(image_folder, single, "--batch-size", "1", gammas="0.3,1")) == 0
    single_runs = tiny_model.trunk_calls
    assert main(_explain_argv(image_folder, batched, "--batch-size", "3", gammas="0.3,1")) == 0
    # one gradient pass per image and one faithfulness forward per row, against per batch of
    # 3 (a, b, c; broken, d, e): one gradient pass and one forward of every masked image
    assert single_runs == 5 + 5 * 2 * 2
    assert tiny_model.trunk_calls - single_runs == 2 + 2
    columns = ("rd_cam", "rd_finer", "drop_cam", "drop_finer")
    rows = _rows(batched / "explanations.csv")
    assert len(rows) == 5 * 2 * 2
    for mine, theirs in zip(rows, _rows(single / "explanations.csv"), strict=True):
        assert (mine["image"], mine["method"], mine["gamma"]) == (
            theirs["image"],
            theirs["method"],
            theirs["gamma"],
        )
        for column in columns:  # float noise, and the 6 digits written: one step of the last
            expected = pytest.approx(float(theirs[column]), abs=1e-6, rel=1e-5)
            assert float(mine[column]) == expected


def test_an_interrupted_batched_run_resumes_to_the_same_files(
    tiny_model, image_folder, tmp_path, monkeypatch
):
    from app.cli import explain_cmd

    reference, out = tmp_path / "reference", tmp_path / "out"
    assert main(_explain_argv(image_folder, reference, "--batch-size", "1")) == 0
    explain_one = explain_cmd.explain_one

    def interrupted(session, loaded, *args):
        if loaded.item.key.endswith("d.png"):
            raise KeyboardInterrupt  # mid-batch: broken.jpg, d.png, e.png went through the model
        return explain_one(session, loaded, *args)

    monkeypatch.setattr(explain_cmd, "explain_one", interrupted)
    assert main(_explain_argv(image_folder, out, "--batch-size", "3")) == 130
    assert len({p.parent for p in out.rglob("*.npy")}) == 3  # a, b, c: the first batch
    monkeypatch.setattr(explain_cmd, "explain_one", explain_one)
    assert main(_explain_argv(image_folder, out, "--batch-size", "3")) == 0
    _same_outputs(out, reference)
    images = Counter(row["image"] for row in _rows(out / "explanations.csv"))
    assert len(images) == 5 and set(images.values()) == {2 * 3}  # each row once
    runs = tiny_model.trunk_calls
    assert main(_explain_argv(image_folder, out, "--batch-size", "3")) == 0
    assert tiny_model.trunk_calls == runs  # all done: no model pass


def test_batch_size_is_checked(tiny_model, image_folder, tmp_path, monkeypatch, capsys):
    assert main(_explain_argv(image_folder, tmp_path / "a", "--batch-size", "0")) == 2
    monkeypatch.setenv("FINERCAM_CACHE_ENTRIES", "3")
    assert main(_explain_argv(image_folder, tmp_path / "b", "--batch-size", "4")) == 2
    assert "FINERCAM_CACHE_ENTRIES=3" in capsys.readouterr().err
