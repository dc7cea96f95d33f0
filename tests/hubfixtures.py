"""A local Hugging Face Hub for tests: the cache layout, tiny real models, a fake endpoint.

* :func:`write_repo` lays files out exactly as huggingface_hub writes its cache
  (``models--org--name/{blobs,refs/main,snapshots/<commit>/...}``, LFS blobs named by sha256,
  other blobs by their git blob sha1, snapshot entries as relative symlinks).
* :func:`tiny_timm_files` / :func:`tiny_open_clip_files`: a tiny timm ViT classifier (timm's own
  ``save_for_hf`` format) and a tiny open_clip model (``open_clip_config.json`` + safetensors),
  created and saved by the test itself.
* :class:`FakeHub`: a real HTTP server on 127.0.0.1 answering the Hub API calls huggingface_hub
  makes (``/api/models/...`` metadata, ``HEAD``/``GET .../resolve/...``); it records requests.
* :func:`hanging_server`: a socket that accepts connections and never answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
TIMM_LABELS = [
    "Acadian Flycatcher",
    "Least Flycatcher",
    "Alder Flycatcher",
    "Willow Flycatcher",
    "Yellow-bellied Flycatcher",
]


def blob_name(filename: str, data: bytes) -> str:
    """The blob name huggingface_hub uses: sha256 for LFS files, git blob sha1 otherwise."""
    if filename.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def commit_of(files: dict[str, bytes]) -> str:
    digest = hashlib.sha1()
    for name in sorted(files):
        digest.update(name.encode() + blob_name(name, files[name]).encode())
    return digest.hexdigest()


def write_repo(cache: Path, repo: str, files: dict[str, bytes]) -> Path:
    """Put ``files`` into the Hub cache at ``cache`` as revision ``main`` of ``repo``."""
    root = cache / ("models--" + repo.replace("/", "--"))
    commit = commit_of(files)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    (root / "blobs").mkdir(exist_ok=True)
    snapshot = root / "snapshots" / commit
    for name, data in files.items():
        blob = root / "blobs" / blob_name(name, data)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return snapshot


@contextmanager
def offline_hub(monkeypatch, folder: Path) -> Iterator[Path]:
    """huggingface_hub pointed at the cache ``folder``, offline, the test repos allowed; the
    Hub state the loaders remember (probe, detected libraries and hints, open_clip engines)
    reset."""
    from huggingface_hub import constants

    from app.models.hub import detect, hints, policy
    from app.models.hub import loading as hub_loading

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("FINERCAM_HUB_MODELS", "finercam-test/*")
    resets = (policy.reset_state, detect._DETECTED.clear, hints.forget, hub_loading._ENGINES.clear)
    for forget in resets:
        forget()
    try:
        yield folder
    finally:
        for forget in resets:
            forget()


def _read_dir(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def tiny_timm_files() -> dict[str, bytes]:
    """config.json + model.safetensors of a 2-block timm ViT classifier with label names."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    args = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
    model = timm.create_model("vit_tiny_patch16_224", num_classes=len(TIMM_LABELS), **args)
    config = {"label_names": TIMM_LABELS}
    with tempfile.TemporaryDirectory() as folder:
        save_for_hf(model, folder, model_config=config, model_args=args, safe_serialization=True)
        files = _read_dir(Path(folder))
    files.pop("pytorch_model.bin", None)
    return files


TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny_open_clip_files() -> dict[str, bytes]:
    """open_clip_config.json + open_clip_model.safetensors of a tiny ViT CLIP."""
    from open_clip.model import CLIP
    from safetensors.torch import save

    torch.manual_seed(0)
    model = CLIP(**TINY_CLIP_CFG)
    config = {
        "model_cfg": TINY_CLIP_CFG,
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    return {
        "open_clip_config.json": json.dumps(config).encode(),
        "open_clip_model.safetensors": save(state),
    }


class FakeHub:
    """Serves ``repos`` ({repo: {filename: bytes}}) like the Hub; ``sizes`` overrides the
    sizes reported in the metadata; ``requests`` lists (method, path) received."""

    def __init__(
        self, repos: dict[str, dict[str, bytes]], sizes: dict[str, int] | None = None
    ) -> None:
        self.repos, self.sizes = repos, sizes or {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub.requests.append(("HEAD", self.path))
                self._answer(body=False)

            def do_GET(self):
                hub.requests.append(("GET", self.path))
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                status, headers, data = hub.route(self.path)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def route(self, path: str) -> tuple[int, dict[str, str], bytes]:
        path = path.split("?")[0]
        if path.startswith("/api/models/"):
            repo = "/".join(path.removeprefix("/api/models/").split("/")[:2])
            if repo not in self.repos:
                return 404, {"X-Error-Code": "RepoNotFound"}, b"{}"
            files = self.repos[repo]
            siblings = [
                {"rfilename": n, "size": self.sizes.get(n, len(d)), "blobId": blob_name(n, d)}
                for n, d in files.items()
            ]
            info = {
                "id": repo,
                "modelId": repo,
                "sha": commit_of(files),
                "siblings": siblings,
                "private": False,
                "tags": [],
            }
            return 200, {"Content-Type": "application/json"}, json.dumps(info).encode()
        if "/resolve/" in path:
            repo_part, _, rest = path.lstrip("/").partition("/resolve/")
            filename = rest.partition("/")[2]
            data = self.repos.get(repo_part, {}).get(filename)
            if data is None:
                return 404, {"X-Error-Code": "EntryNotFound"}, b""
            files = self.repos[repo_part]
            etag = f'"{blob_name(filename, data)}"'
            headers = {"X-Repo-Commit": commit_of(files), "ETag": etag}
            if filename.endswith(LFS_SUFFIXES):
                headers["X-Linked-Etag"] = etag
                headers["X-Linked-Size"] = str(len(data))
            return 200, headers, data
        return 200, {"Content-Type": "text/plain"}, b"fake hub"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def hanging_server() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a socket that accepts and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def tiny_timm_cnn_files() -> dict[str, bytes]:
    """A tiny timm ResNet with a 1000-class head and no label names (ImageNet fallback)."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=1000)
    with tempfile.TemporaryDirectory() as folder:
        save_for_hf(model, folder, safe_serialization=True)
        files = _read_dir(Path(folder))
    files.pop("pytorch_model.bin", None)
    return files


#: Tiny random `transformers` configs, one per supported family: (config class, arguments,
#: model class name when not the Auto default). A few hundred KB of weights each.
_VIT_ARGS = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
_SWIN_ARGS = {
    "image_size": 32,
    "patch_size": 4,
    "embed_dim": 16,
    "depths": [1, 1],
    "num_heads": [2, 2],
    "window_size": 4,
}
TRANSFORMERS_FAMILIES: dict[str, tuple[str, dict, str | None]] = {
    "vit": ("ViTConfig", _VIT_ARGS, None),
    "deit": ("DeiTConfig", _VIT_ARGS, "DeiTForImageClassificationWithTeacher"),
    "beit": (
        "BeitConfig",
        {
            **_VIT_ARGS,
            "use_relative_position_bias": True,
            "use_shared_relative_position_bias": False,
            "use_mean_pooling": True,
            "layer_scale_init_value": 0.1,
        },
        None,
    ),
    "dinov2": ("Dinov2Config", {**_VIT_ARGS, "mlp_ratio": 2}, None),
    "dinov2_with_registers": (
        "Dinov2WithRegistersConfig",
        {**_VIT_ARGS, "mlp_ratio": 2, "num_register_tokens": 2},
        None,
    ),
    "swin": (
        "SwinConfig",
        _SWIN_ARGS,
        None,
    ),
    "swinv2": (
        "Swinv2Config",
        _SWIN_ARGS,
        None,
    ),
    "convnextv2": (
        "ConvNextV2Config",
        {"hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2, "image_size": 32},
        None,
    ),
    "convnext": (
        "ConvNextConfig",
        {"hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2, "image_size": 32},
        None,
    ),
    "resnet": (
        "ResNetConfig",
        {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"},
        None,
    ),
    "regnet": (
        "RegNetConfig",
        {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "groups_width": 8},
        None,
    ),
    "efficientnet": (
        "EfficientNetConfig",
        {"image_size": 128, "width_coefficient": 0.1, "depth_coefficient": 0.1, "hidden_dim": 128},
        None,
    ),
    "mobilevit": (
        "MobileViTConfig",
        {
            "image_size": 128,
            "hidden_sizes": [16, 16, 16],
            "neck_hidden_sizes": [8, 8, 8, 8, 8, 8, 16],
            "num_attention_heads": 2,
        },
        None,
    ),
}


def tiny_transformers_files(family: str) -> dict[str, bytes]:
    """config.json (with ``id2label``) + model.safetensors (``save_pretrained``) +
    preprocessor_config.json of a tiny random classifier of ``family``."""
    import transformers

    config_class, args, model_class = TRANSFORMERS_FAMILIES[family]
    labels = {i: name for i, name in enumerate(TIMM_LABELS)}
    config = getattr(transformers, config_class)(
        **args, id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    torch.manual_seed(0)
    if model_class:
        model = getattr(transformers, model_class)(config)
    else:
        model = transformers.AutoModelForImageClassification.from_config(config)
    with torch.no_grad():  # some families initialise heads / norms to zero: nothing to explain
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    side = int(args.get("image_size", 32))
    processor = {
        "do_resize": True,
        "size": {"height": side, "width": side},
        "resample": 3,
        "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "image_processor_type": "ViTImageProcessor",
    }
    if family == "mobilevit":
        processor.update(do_normalize=False, do_flip_channel_order=True)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, safe_serialization=True)
        (Path(folder) / "preprocessor_config.json").write_text(json.dumps(processor))
        return _read_dir(Path(folder))


#: Tiny timm models beyond the plain ViT: (architecture, arguments, input side).
TIMM_TOKEN_MODELS: dict[str, tuple[str, dict, int]] = {
    "eva02": (
        "eva02_tiny_patch14_336",
        {"img_size": 56, "embed_dim": 32, "depth": 2, "num_heads": 2},
        56,
    ),
    "levit": (
        "levit_128s",
        {
            "img_size": 256,
            "embed_dim": (16, 32, 48),
            "key_dim": 8,
            "num_heads": (2, 2, 2),
            "depth": (1, 1, 1),
        },
        256,
    ),
}


def tiny_timm_token_files(kind: str) -> dict[str, bytes]:
    """A tiny random EVA-02 (rotary positions) or LeViT (attention downsampling, distillation
    head) classifier in timm's ``save_for_hf`` format, with label names and its input size."""
    import timm
    from timm.models import save_for_hf

    architecture, args, side = TIMM_TOKEN_MODELS[kind]
    torch.manual_seed(0)
    model = timm.create_model(architecture, num_classes=len(TIMM_LABELS), **args)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, side, side)}
    with tempfile.TemporaryDirectory() as folder:
        save_for_hf(
            model,
            folder,
            model_config={"label_names": TIMM_LABELS},
            model_args=args,
            safe_serialization=True,
        )
        files = _read_dir(Path(folder))
    files.pop("pytorch_model.bin", None)
    return files
