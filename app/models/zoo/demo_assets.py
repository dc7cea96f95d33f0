"""Where the offline demo models live (``assets/demo/``) and how open_clip finds the tiny CLIP.

The demo models are trained on the procedural birds of ``app.synthbirds`` by
``python -m app.train.demo_cnn``, ``demo_vit`` and ``demo_tinyclip``.
"""

from __future__ import annotations

import json
from pathlib import Path

from app.models.weights import WeightsFileError

REPO_ROOT = Path(__file__).resolve().parents[3]
DEMO_DIR = REPO_ROOT / "assets" / "demo"

DEMO_CNN_NAME = "demo-cnn"
DEMO_CNN_WEIGHTS = DEMO_DIR / "demo-cnn.safetensors"
DEMO_CNN_META = DEMO_DIR / "demo-cnn.json"

DEMO_VIT_NAME = "demo-vit"
DEMO_VIT_WEIGHTS = DEMO_DIR / "demo-vit.safetensors"
DEMO_VIT_META = DEMO_DIR / "demo-vit.json"

#: open_clip model name = the config file's stem.
TINYCLIP_MODEL_NAME = "synthbirds-tinyclip"
TINYCLIP_CONFIG = DEMO_DIR / f"{TINYCLIP_MODEL_NAME}.json"
TINYCLIP_WEIGHTS = DEMO_DIR / f"{TINYCLIP_MODEL_NAME}.safetensors"
TINYCLIP_META = DEMO_DIR / f"{TINYCLIP_MODEL_NAME}.meta.json"


def register_tinyclip_config() -> str:
    """Register the tiny CLIP's config with open_clip (idempotent); returns its model name.

    Then ``open_clip.create_model_and_transforms(name, pretrained=str(TINYCLIP_WEIGHTS))`` and
    ``open_clip.get_tokenizer(name)`` work exactly as for a built-in model.
    """
    import open_clip

    if TINYCLIP_MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(TINYCLIP_CONFIG)
    return TINYCLIP_MODEL_NAME


def tinyclip_meta() -> dict:
    """Labels, templates and measured accuracies written by ``app.train.demo_tinyclip``."""
    if not TINYCLIP_META.is_file():
        raise WeightsFileError(
            f"tiny CLIP metadata {TINYCLIP_META} is missing; train it with "
            "`python -m app.train.demo_tinyclip`"
        )
    return json.loads(TINYCLIP_META.read_text())


def require_files(paths, trainer: str) -> None:
    """FileNotFoundError naming the training script when a shipped demo file is missing."""
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"demo model file {path} is missing; train it with `python -m {trainer}`"
            )
