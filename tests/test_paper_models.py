"""The paper's DINOv2 classifiers and BioCLIP: head download + sha256, mean-of-patch features.

GitHub is not reachable from the test machine, so the head comes from a real HTTP server on
127.0.0.1 (``FINERCAM_PAPER_HEADS_URL``), written by the test in the authors' format (a
``torch.save`` of an ``nn.Linear`` state dict); the backbone is a tiny timm ViT built with the
same options as DINOv2 here (``global_pool="avg", fc_norm=False``).
"""

from __future__ import annotations

import hashlib
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from huggingface_hub import constants

from app.models.hub.loading import class_list, register_class_list
from app.models.registry import get_spec
from app.models.weights import WeightsFileError
from app.models.zoo import paper_models
from app.models.zoo.paper_models import (
    HEADS,
    PaperHead,
    fetch_head,
    mean_patch_backbone,
    paper_model,
)

NAMES = ["Alpha Warbler", "Beta Warbler", "Gamma Wren", "Delta Wren"]


@pytest.fixture
def head_server(tmp_path, monkeypatch):
    """Serve ``tmp_path/served`` over HTTP; the heads cache goes to ``tmp_path/hf``."""
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None  # type: ignore[assignment]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("FINERCAM_PAPER_HEADS_URL", f"http://127.0.0.1:{server.server_address[1]}/")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    yield served
    server.shutdown()
    server.server_close()


def _tiny_dino():
    import timm

    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=0,
        dynamic_img_size=True,
        global_pool="avg",
        fc_norm=False,
    )


def _write_head(folder, classes: int, features: int = 32) -> PaperHead:
    torch.manual_seed(1)
    linear = torch.nn.Linear(features, classes)
    path = folder / "classifier_test_DINO.pth"
    torch.save(linear.state_dict(), path)  # the authors' format
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return PaperHead(path.name, digest, register_class_list(NAMES[:classes]))


def test_head_downloads_verifies_and_builds_the_paper_model(head_server, rgb_image):
    head = _write_head(head_server, len(NAMES))
    backbone = mean_patch_backbone(_tiny_dino(), "tiny-dino", torch.device("cpu"), "tiny")
    model = paper_model("birds525-dinov2", head, backbone)
    cached = paper_models.heads_dir() / head.file
    assert cached.is_file() and cached.parent.parent == paper_models.heads_dir().parent
    assert list(model.labels) == NAMES
    # logits = W · mean(patch tokens after the final norm) + b, as the authors' ModifiedDINO
    x = model.preprocess(rgb_image)
    assert x.shape[-2:] == (224, 224)
    state = torch.load(head_server / head.file, weights_only=True)
    with torch.no_grad():
        tokens = backbone.model.forward_features(x)
        expected = tokens[:, 1:].mean(dim=1) @ state["weight"].T + state["bias"]
    assert torch.allclose(model.logits(x), expected, atol=1e-5)
    (head_server / head.file).unlink()
    assert fetch_head(head) == cached  # second use: the verified cache, no download


def test_wrong_sha256_is_refused_and_a_corrupt_cache_refetched(head_server):
    head = _write_head(head_server, 2)
    bad = PaperHead(head.file, "0" * 64, head.classes)
    with pytest.raises(WeightsFileError, match="expected 000000000000"):
        fetch_head(bad)
    assert not (paper_models.heads_dir() / head.file).exists()  # a bad download is not kept
    cached = fetch_head(head)
    cached.write_bytes(cached.read_bytes()[:100])  # cut short
    assert fetch_head(head).read_bytes() == (head_server / head.file).read_bytes()


def test_head_of_the_wrong_shape_is_refused(head_server):
    head = _write_head(head_server, 3)
    backbone = mean_patch_backbone(_tiny_dino(), "tiny-dino", torch.device("cpu"), "tiny")
    wrong = PaperHead(head.file, head.sha256, register_class_list(NAMES))  # 4 names, 3 rows
    with pytest.raises(WeightsFileError, match=r"expected weight of shape \(4, 32\)"):
        paper_model("x", wrong, backbone)


def test_registered_paper_models_and_bioclip():
    for name, (count, fallback) in {
        "birds525-dinov2": (525, "demo-cnn"),
        "cars196-dinov2": (196, "demo-cnn"),
    }.items():
        spec = get_spec(name)
        assert (spec.task, spec.fallback) == ("classifier", fallback)
        assert len(class_list(HEADS[name].classes)[0]) == count
    assert class_list("birds525")[0][:2] == ["ABBOTTS BABBLER", "ABBOTTS BOOBY"]
    assert class_list("cars196")[0][0] == "AM General Hummer SUV 2000"
    assert paper_models.HEADS_URL.endswith(f"/{paper_models.HEADS_COMMIT}/classifier_weight/")
    assert get_spec("bioclip-cub200").task == "classifier"
    assert get_spec("bioclip").task == "concepts"
    from app.models.registry import model_specs

    assert model_specs("classifier")[0].name == "birds525-dinov2"  # offered first online
