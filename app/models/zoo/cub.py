"""CUB-200-2011 bird classifiers: CLIP zero-shot (default) and pluggable trained linear heads.

``cub200-clip-zeroshot``: the CLIP image encoder with a head over the 200 CUB class names
(``assets/cub200_classes.txt``, cleaned: ``001.Black_footed_Albatross`` -> ``Black-footed
Albatross``) in the template ``a photo of a {}, a type of bird.``. Head rows are the normalised
text embeddings, so weight-similarity references find look-alike species.

``cub200-linear``: the slot for a user's trained linear head on a frozen backbone
(:mod:`app.models.adapters.linear_head`), loaded from ``FINERCAM_CUB_HEAD``: a local
``.safetensors`` file (or a folder holding ``head.safetensors``) or a Hub repo id holding
``head.safetensors`` + ``classes.json``. ``python -m app.train.head`` writes such heads. The
head file's metadata names its backbone and input size; ``FINERCAM_CUB_BACKBONE`` overrides it.
The head need not be CUB's: its summary and description name its own classes and backbone (from
a local head's metadata as soon as the module is imported, from the loaded head otherwise).
"""

from __future__ import annotations

import re
from pathlib import Path

from app.config import Settings
from app.models.adapters.clip import ClipPromptView, settings_engine
from app.models.adapters.linear_head import LinearHeadModel, load_linear_model, local_head_title
from app.models.registry import ModelSpec, register_model

ASSETS = Path(__file__).resolve().parents[3] / "assets"
CUB_CLASSES_FILE = ASSETS / "cub200_classes.txt"
CUB_TEMPLATE = "a photo of a {}, a type of bird."

_POSSESSIVE = {
    "Brewer",
    "Brandt",
    "Heermann",
    "Anna",
    "Clark",
    "Scott",
    "Baird",
    "Harris",
    "Henslow",
    "Conte",
    "Lincoln",
    "Nelson",
    "Swainson",
    "Wilson",
    "Bewick",
}
_SPECIAL = {
    "Chuck_will_Widow": "Chuck-will's-widow",
    "Whip_poor_Will": "Whip-poor-will",
    "Artic_Tern": "Arctic Tern",
    "Forsters_Tern": "Forster's Tern",
}


def clean_cub_name(raw: str) -> str:
    """``'001.Black_footed_Albatross'`` -> ``'Black-footed Albatross'`` (CUB folder names)."""
    name = re.sub(r"^\d+\.", "", raw.strip())
    if name in _SPECIAL:
        return _SPECIAL[name]
    words: list[str] = []
    for part in name.split("_"):
        if words and part[:1].islower():
            words[-1] += "-" + part  # Black_footed -> Black-footed
        else:
            words.append(part)
    last = len(words) - 1
    words = [w + "'s" if w in _POSSESSIVE and i < last else w for i, w in enumerate(words)]
    return " ".join(words)


def cub_class_names() -> list[str]:
    """The 200 cleaned CUB-200-2011 class names, in class-id order."""
    names = [line.strip() for line in CUB_CLASSES_FILE.read_text().splitlines() if line.strip()]
    if len(names) != 200:
        raise ValueError(f"{CUB_CLASSES_FILE} lists {len(names)} classes, expected 200")
    return names


# --------------------------------------------------------------------------- zero-shot


def build_zeroshot(settings: Settings) -> ClipPromptView:
    engine = settings_engine(settings)
    view = engine.view(
        "cub200-clip-zeroshot",
        cub_class_names(),
        CUB_TEMPLATE,
        description=f"CUB-200 zero-shot on {engine.description}",
    )
    view.text_embeddings()  # encode the 200 names now, not on the first request
    return view


def build_linear(settings: Settings) -> LinearHeadModel:
    if not settings.cub_head:
        raise ValueError(
            "cub200-linear needs a trained head: set FINERCAM_CUB_HEAD to a local .safetensors "
            "file or a Hub repo id (train one with `python -m app.train.head`)"
        )
    return load_linear_model(
        settings.cub_head, settings.torch_device, settings.cub_backbone, settings
    )


register_model(
    ModelSpec(
        name="cub200-clip-zeroshot",
        summary="CUB-200 birds: zero-shot head over the 200 species names on CLIP ViT-B/16",
        task="classifier",
        build=build_zeroshot,
        fallback="demo-cnn",
        attention=True,
    )
)


def linear_summary(settings: Settings) -> str:
    """The head's own classes and backbone when ``FINERCAM_CUB_HEAD`` is a local head that says
    them; else what the slot takes."""
    title = (
        local_head_title(settings.cub_head, settings.cub_backbone) if settings.cub_head else None
    )
    return title or "Your trained linear head (FINERCAM_CUB_HEAD) on a frozen backbone"


register_model(
    ModelSpec(
        name="cub200-linear",
        summary=linear_summary(Settings.from_env()),
        task="classifier",
        build=build_linear,
        fallback="demo-cnn",
        attention=True,
    )
)
