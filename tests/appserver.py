"""A real Finer-CAM Studio server on 127.0.0.1 for the UI/API tests (imported by test modules).

Uses the shipped offline demo models (``demo-cnn``, ``demo-tinyclip``) when they load; when the
demo weights are not there (a partial checkout), registers two tiny test-only adapters with the
same interface so the UI and API are still exercised end to end.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from app.config import Settings
from app.models import registry as registry_module
from app.models.base import ExplainableModel
from app.models.registry import ModelRegistry, ModelSpec, register_model

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO_ROOT / "assets" / "examples").glob("*.png"))
TEST_LABELS = ("alpha finch", "beta finch", "gamma wren", "delta wren", "epsilon jay", "zeta jay")


# ----------------------------------------------------------------- test-only tiny models


class _TinyNet(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.fc = nn.Linear(16, classes)


class _Preprocess:
    size = 64

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        resized = image.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return ((x - 0.5) / 0.25).unsqueeze(0)


class TinyClassifier(_Preprocess, ExplainableModel):
    """A random 6-class CNN (used only when the demo CNN's weights are missing)."""

    def __init__(self, name: str = "test-tiny-cnn") -> None:
        self.name = name
        self.labels = TEST_LABELS
        self.device = torch.device("cpu")
        self.trunk_key = name
        self.description = "test-only random CNN (cpu)"
        self.net = _TinyNet(len(TEST_LABELS)).eval()

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)

    def tail(self, activation: torch.Tensor) -> torch.Tensor:
        return self.net.fc(activation.mean(dim=(2, 3)))

    def class_embeddings(self) -> torch.Tensor:
        return self.net.fc.weight


class TinyConcepts(_Preprocess, ExplainableModel):
    """A CLIP-shaped toy: image features vs. per-prompt pseudo text embeddings (seeded by text)."""

    def __init__(
        self,
        prompts: Sequence[str] = (),
        name: str = "test-tiny-concepts",
        net: _TinyNet | None = None,
        template: str | None = None,
    ) -> None:
        self.name = name
        self.net = net or _TinyNet(2).eval()
        self.template = template or "{}"
        self.labels = tuple(prompts)
        self.device = torch.device("cpu")
        self.trunk_key = name
        self.head_key = "|".join(self.template.replace("{}", p) for p in prompts)
        self.description = "test-only toy CLIP (cpu)"

    def with_prompts(self, prompts: Sequence[str], template: str | None = None) -> TinyConcepts:
        return TinyConcepts(prompts, self.name, self.net, template)

    def _text(self) -> torch.Tensor:
        rows = []
        for prompt in self.labels:
            seed = int(
                hashlib.sha256(self.template.replace("{}", prompt).encode()).hexdigest()[:8], 16
            )
            rows.append(torch.randn(16, generator=torch.Generator().manual_seed(seed)))
        return F.normalize(torch.stack(rows), dim=-1)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)

    def tail(self, activation: torch.Tensor) -> torch.Tensor:
        return 20.0 * F.normalize(activation.mean(dim=(2, 3)), dim=-1) @ self._text().T

    def class_embeddings(self) -> torch.Tensor:
        return self._text()


# ------------------------------------------------------------------------------ server


@dataclass
class Server:
    url: str
    classifier: str
    concepts: str
    demo: object
    service: object
    registry: ModelRegistry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _importable_adapters() -> tuple[str, ...]:
    """Adapter modules that import (others may still be work in progress in a checkout)."""
    ok = []
    for module in registry_module.ADAPTER_MODULES:
        try:
            importlib.import_module(module)
            ok.append(module)
        except Exception as error:  # noqa: BLE001 - a missing or broken adapter narrows the choice
            log.warning("adapter %s does not import: %s", module, error)
    return tuple(ok)


def _loads(registry: ModelRegistry, name: str) -> bool:
    try:
        return (
            name in registry.names()
            and registry.get(name) is not None
            and not registry.notice(name)
        )
    except Exception:  # noqa: BLE001
        return False


def pick_models() -> tuple[str, str]:
    """(classifier, concepts) names: the demo models when they load, else test-only tiny ones."""
    registry_module.ADAPTER_MODULES = _importable_adapters()
    probe = ModelRegistry(Settings(device="cpu", offline=True))
    classifier = "demo-cnn" if _loads(probe, "demo-cnn") else None
    concepts = "demo-tinyclip" if _loads(probe, "demo-tinyclip") else None
    if classifier is None:
        classifier = "test-tiny-cnn"
        register_model(
            ModelSpec(
                classifier,
                "test-only tiny CNN",
                "classifier",
                lambda s: TinyClassifier(),
                offline=True,
            )
        )
    if concepts is None:
        concepts = "test-tiny-concepts"
        register_model(
            ModelSpec(
                concepts, "test-only toy CLIP", "concepts", lambda s: TinyConcepts(), offline=True
            )
        )
    return classifier, concepts


@contextmanager
def running_server() -> Iterator[Server]:
    """Start the real app on a free 127.0.0.1 port in a background thread; close it after."""
    from app.ui import build_app, create_service, launch

    saved_modules = registry_module.ADAPTER_MODULES
    classifier, concepts = pick_models()
    settings = Settings(device="cpu", offline=True, models=(classifier, concepts))
    registry = ModelRegistry(settings)
    service = create_service(registry, settings)
    demo = build_app(service, registry, settings, examples=[str(p) for p in EXAMPLES[:3]])
    port = free_port()
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield Server(f"http://127.0.0.1:{port}/", classifier, concepts, demo, service, registry)
    finally:
        demo.close()
        registry_module.ADAPTER_MODULES = saved_modules
        for name in ("test-tiny-cnn", "test-tiny-concepts"):
            registry_module._SPECS.pop(name, None)


def example(name: str = "red-crowned-bluebird.png") -> Path | None:
    """A shipped example picture (the demo models know these birds), if present."""
    path = REPO_ROOT / "assets" / "examples" / name
    return path if path.exists() else (EXAMPLES[0] if EXAMPLES else None)


def write_image(path: Path, size: tuple[int, int] = (96, 72), seed: int = 0) -> Path:
    """A non-square RGB test picture: a resized example bird (seed 0 = the red-crowned
    bluebird), or smooth colour blobs when no example ships."""
    if EXAMPLES:
        source = example() if seed == 0 else EXAMPLES[seed % len(EXAMPLES)]
        Image.open(source).convert("RGB").resize(size).save(path)
        return path
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    img = np.zeros((size[1], size[0], 3))
    for c in range(3):
        cy, cx = rng.uniform(0, size[1]), rng.uniform(0, size[0])
        img[..., c] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size[0] / 4) ** 2))
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path
