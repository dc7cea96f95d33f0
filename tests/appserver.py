"""A real Finer-CAM Studio server on 127.0.0.1 for the UI/API tests (imported by test modules).

Serves the shipped offline demo models (``demo-cnn``, ``demo-tinyclip``). When one of them does
not load, the fixture fails with the registry's reason: a broken demo model must fail the UI and
API tests, not narrow them.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from app.config import Settings
from app.models.registry import ModelRegistry

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO_ROOT / "assets" / "examples").glob("*.png"))
DEMO_CLASSIFIER = "demo-cnn"
DEMO_CONCEPTS = "demo-tinyclip"


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


def load_demo_models(registry: ModelRegistry) -> None:
    """Load both demo models now, so a broken one fails the fixture with the registry's reason."""
    for name in (DEMO_CLASSIFIER, DEMO_CONCEPTS):
        registry.get(name)
        notice = registry.notice(name)
        if notice:
            raise RuntimeError(f"shipped demo model {name} did not load: {notice}")


@contextmanager
def running_server() -> Iterator[Server]:
    """Start the real app on a free 127.0.0.1 port in a background thread; close it after."""
    from app.ui import build_app, create_service, launch

    settings = Settings(device="cpu", offline=True, models=(DEMO_CLASSIFIER, DEMO_CONCEPTS))
    registry = ModelRegistry(settings)
    load_demo_models(registry)
    service = create_service(registry, settings)
    demo = build_app(service, registry, settings, examples=[str(p) for p in EXAMPLES[:3]])
    port = free_port()
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        yield Server(url, DEMO_CLASSIFIER, DEMO_CONCEPTS, demo, service, registry)
    finally:
        demo.close()


def example(name: str = "red-crowned-bluebird.png") -> Path:
    """A shipped example picture (the demo models know these birds)."""
    return REPO_ROOT / "assets" / "examples" / name


def write_image(path: Path, size: tuple[int, int] = (96, 72), seed: int = 0) -> Path:
    """A non-square RGB test picture: a resized example bird (seed 0 = the red-crowned
    bluebird)."""
    source = example() if seed == 0 else EXAMPLES[seed % len(EXAMPLES)]
    Image.open(source).convert("RGB").resize(size).save(path)
    return path
