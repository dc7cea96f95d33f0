"""The Space: a valid Gradio-SDK card, and ``python <app_file>`` serving an honest offline start.

The entry runs exactly as Spaces runs it (``python app/__main__.py`` from the repository root),
without ``--offline`` and without ``HF_HUB_OFFLINE``, while the Hub endpoint is a socket that
accepts and never answers. Checked: the page's default classifier is the model that serves
(``demo-cnn``), the first explanation with it returns within 10 s of the server being up (a
functional bound), the status line is at most 2 lines / 400 characters, ``/health`` answers,
and a Hub model from the local cache loads by id through the API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from gradio_client import Client, handle_file

from tests.appserver import REPO_ROOT, free_port, write_image
from tests.hubfixtures import TIMM_LABELS, hanging_server, tiny_timm_files, write_repo

README = REPO_ROOT / "README.md"


def test_front_matter_is_a_gradio_space_card():
    import gradio
    from huggingface_hub import SpaceCard
    from huggingface_hub._space_api import SpaceHardware
    from packaging.requirements import Requirement

    card = SpaceCard.load(README)
    data = card.data
    assert data.sdk == "gradio"
    assert data.sdk_version == gradio.__version__  # the version tested here
    pinned = next(
        Requirement(line)
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if line.startswith("gradio")
    )
    assert pinned.specifier.contains(data.sdk_version)
    assert (REPO_ROOT / data.app_file).is_file() and data.app_file == "app/__main__.py"
    assert data.suggested_hardware in {h.value for h in SpaceHardware}
    assert data.suggested_hardware.startswith("zero-")  # ZeroGPU: Gradio SDK only
    assert str(data.python_version) == "3.11"
    assert "app_port" not in data.to_dict()  # a Docker-SDK field


def _wait_up(url: str, process: subprocess.Popen, limit: float = 240.0) -> float:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the app exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic()
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError("the app did not come up")


def _dropdown_value(url: str, elem_id: str) -> str:
    config = httpx.get(url + "config", timeout=10).json()
    for component in config["components"]:
        if component.get("props", {}).get("elem_id") == elem_id:
            return component["props"]["value"]
    raise AssertionError(f"no component {elem_id}")


@pytest.mark.timeout(420)
def test_app_file_serves_an_honest_offline_start(tmp_path):
    hf_home = tmp_path / "hf"
    write_repo(hf_home / "hub", "finercam-test/tiny-vit", tiny_timm_files())
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with hanging_server() as hanging:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_HUB_CACHE")}
        env.update(
            HF_ENDPOINT=hanging,
            HF_HOME=str(hf_home),
            FINERCAM_DEVICE="cpu",
            GRADIO_SERVER_PORT=str(port),
            FINERCAM_HUB_MODELS="finercam-test/*",
            TORCH_HOME=str(tmp_path / "torch"),
        )
        process = subprocess.Popen(
            [sys.executable, "app/__main__.py"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            up = _wait_up(url, process)
            default = _dropdown_value(url, "clf-model")
            assert default == "demo-cnn"  # the model that serves, not the unreachable one
            client = Client(url, verbose=False)
            result = client.predict(
                image=handle_file(str(write_image(tmp_path / "b.png"))),
                model=default,
                api_name="/explain_classifier",
            )
            first = time.monotonic() - up
            print(f"first explanation {first:.2f} s after the server was up")
            status = result[-1]
            assert first < 10.0, f"first explanation {first:.1f} s after the server was up"
            assert len(status) <= 400 and status.count("\n") <= 1, status
            assert "Hub: unreachable" in status and "birds525-dinov2→demo-cnn" in status
            assert httpx.get(url + "health", timeout=5).json()["status"] == "ok"
            name, _ = client.predict(
                "timm:finercam-test/tiny-vit", "cub200", "", api_name="/load_hub_classifier"
            )
            assert name["value"] == "timm:finercam-test/tiny-vit"
            hub_result = client.predict(
                image=handle_file(str(tmp_path / "b.png")),
                model="timm:finercam-test/tiny-vit",
                api_name="/explain_classifier",
            )
            assert hub_result[0]["label"] in TIMM_LABELS
        finally:
            process.terminate()
            output = process.communicate(timeout=30)[0]
    print(output[-3000:])
    assert "Traceback" not in output
