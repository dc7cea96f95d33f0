"""``--engine ray``: the batch CLI on a local Ray runtime of 2 CPUs writes what the local engine
writes, and resumes the same way (Ray is optional for the app; CI installs it).

One runtime serves the module (starting Ray costs more than the work here): this process starts
it, ``python -m app.cli ... --engine ray --ray-address`` connects to it like to a cluster, and the
fixture shuts it down and checks that none of its processes is left.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.cli import main

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(420)


def _images(folder: Path, count: int = 4) -> Path:
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True)
    for i in range(count):
        pixels = rng.integers(0, 255, (72 + 8 * i, 96, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"bird{i}.png")
    return folder


@pytest.fixture(scope="module")
def cluster():
    """A local Ray runtime of 2 CPUs: yields its address; afterwards, no process of it lives."""
    assert not ray.is_initialized()
    # Its workers (spawned by its raylet, for every job) import ``app`` from this checkout.
    # A loaded CI machine starts Ray's Python agents slowly: give the raylet time to wait.
    extra = {
        "PYTHONPATH": str(REPO),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_agent_register_timeout_ms": "120000",
    }
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as error:  # Ray's own 30 s start-up limit, hit on an overloaded machine
        if "timed out during startup" not in str(error):
            raise
        pytest.skip(f"Ray could not start a local runtime here: {error}")
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    session = Path(context.address_info["session_dir"]).name
    try:
        yield context.address_info["address"]
    finally:
        ray.shutdown()
    assert not _live_processes_of(session), "Ray processes outlived the runtime"


def _cli(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *argv],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _live_processes_of(session: str) -> list[str]:
    """Command lines of running processes that belong to a Ray session (its raylet, GCS...)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if session in cmdline:
            found.append(cmdline[:120])
    return found


def _maps(out: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(out).as_posix(): np.load(p) for p in sorted(out.rglob("*.npy"))}


def test_explain_on_ray_matches_local_and_resumes(tmp_path, cluster):
    folder = _images(tmp_path / "photos", count=3)
    common = ["--method", "gradcam,layercam", "--gamma", "0.6", "--no-progress", "--workers", "0"]
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert main(["explain", str(folder), "--out", str(local), *common]) == 0
    # One image done by an earlier (interrupted) run, then the Ray run does the rest.
    assert main(["explain", str(folder), "--out", str(on_ray), "--limit", "1", *common]) == 0
    run = _cli(
        "explain",
        str(folder),
        "--out",
        str(on_ray),
        "--engine",
        "ray",
        "--ray-address",
        cluster,
        *common,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "1 of 3 image(s) already done" in run.stderr
    assert "explained 2 image(s)" in run.stderr

    expected, got = _maps(local), _maps(on_ray)
    assert len(expected) == 3 * 2 * 2  # images x methods x (CAM + Finer)
    assert got.keys() == expected.keys()
    for name, array in expected.items():
        assert got[name].shape == array.shape
        np.testing.assert_allclose(got[name], array, atol=1e-5, err_msg=name)
    with open(on_ray / "explanations.csv", newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == 3 * 2

    again = _cli("explain", str(folder), "--out", str(on_ray), "--engine", "ray", *common)
    assert again.returncode == 0 and "nothing to do" in again.stderr


def test_evaluate_on_ray_matches_local(tmp_path, cluster):
    _images(tmp_path / "photos" / "some_species", count=2)
    folder = tmp_path / "photos"
    common = [
        "--target",
        "predicted",
        "--steps",
        "4",
        "--gamma",
        "0.6",
        "--no-progress",
        "--workers",
        "0",
    ]
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert main(["evaluate", str(folder), "--out", str(local), *common]) == 0
    run = _cli(
        "evaluate",
        str(folder),
        "--out",
        str(on_ray),
        "--engine",
        "ray",
        "--ray-address",
        cluster,
        *common,
    )
    assert run.returncode == 0, run.stderr[-3000:]

    def rows(out: Path) -> list[dict[str, str]]:
        with open(out / "per_image.csv", newline="", encoding="utf-8") as handle:
            return sorted(csv.DictReader(handle), key=lambda r: (r["image"], r["variant"]))

    expected, got = rows(local), rows(on_ray)
    assert len(expected) == 2 * 2 and [r["image"] for r in got] == [r["image"] for r in expected]
    for want, have in zip(expected, got, strict=True):
        assert want["target_index"] == have["target_index"]
        for column in ("deletion_auc", "insertion_auc", "rel_conf_drop"):
            assert float(have[column]) == pytest.approx(float(want[column]), abs=1e-5), column
