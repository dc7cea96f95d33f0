"""The offline demo models (weights shipped in ``assets/demo/``), registered by name.

* ``demo-cnn``: a small torchvision ResNet trained on the synthetic birds
  (:mod:`app.models.demo_cnn`).
* ``demo-vit``: a small hybrid timm ViT trained on the synthetic birds (:mod:`app.models.demo_vit`).
* ``demo-tinyclip``: the tiny CLIP trained on synthetic birds and captions, for the concepts
  tab. It is an open_clip model with a custom config, loaded through the same generic adapter
  as a real CLIP (``open_clip.create_model_and_transforms(name, pretrained=<safetensors>)``).
* ``demo-tinyclip-species``: the tiny CLIP as a zero-shot classifier over the synthetic species.
"""

from __future__ import annotations

import json

import torch

from app.config import Settings
from app.models.clip import ClipEngine, ClipPromptView, load_open_clip
from app.models.common import WeightsFileError, shared_instance
from app.models.cub import LinearHeadModel
from app.models.demo_assets import (
    DEMO_CNN_NAME,
    DEMO_VIT_NAME,
    TINYCLIP_META,
    TINYCLIP_WEIGHTS,
    register_tinyclip_config,
)
from app.models.demo_cnn import load_demo_cnn
from app.models.demo_vit import load_demo_vit
from app.models.registry import ModelSpec, register_model
from app.models.torchvision_cnn import TorchvisionCNN

#: The tiny CLIP learned raw captions ("a bird with a red crown"), so concept prompts are used
#: as typed unless its metadata names a template.
TINYCLIP_CONCEPT_TEMPLATE = "{}"
TINYCLIP_SPECIES_TEMPLATE = "a photo of a {}."


def tinyclip_meta() -> dict:
    """Labels, templates and measured accuracies written by ``app.synthbirds.train_clip``."""
    if not TINYCLIP_META.is_file():
        raise WeightsFileError(
            f"tiny CLIP metadata {TINYCLIP_META} is missing; train it with "
            "`python -m app.synthbirds.train_clip`"
        )
    return json.loads(TINYCLIP_META.read_text())


def tinyclip_engine(device: torch.device | str = "cpu") -> ClipEngine:
    """The shipped tiny CLIP, once per device (shared by demo-tinyclip and its species view)."""
    device = torch.device(device)

    def build() -> ClipEngine:
        name = register_tinyclip_config()
        if not TINYCLIP_WEIGHTS.is_file():
            raise WeightsFileError(
                f"tiny CLIP weights {TINYCLIP_WEIGHTS} are missing; train them with "
                "`python -m app.synthbirds.train_clip`"
            )
        engine = load_open_clip(name, str(TINYCLIP_WEIGHTS), device)
        meta = tinyclip_meta() if TINYCLIP_META.is_file() else {}
        accuracy = meta.get("zero_shot_species_accuracy")
        note = f", zero-shot species acc {accuracy:.1%}" if accuracy is not None else ""
        engine.description = f"tiny CLIP on synthetic birds (offline{note}, {device})"
        return engine

    return shared_instance(("demo-tinyclip", str(device)), build)


def build_demo_cnn(settings: Settings) -> TorchvisionCNN:
    return load_demo_cnn(settings.torch_device)


def build_demo_vit(settings: Settings) -> LinearHeadModel:
    return load_demo_vit(settings.torch_device)


def build_tinyclip(settings: Settings) -> ClipPromptView:
    engine = tinyclip_engine(settings.torch_device)
    meta = tinyclip_meta() if TINYCLIP_META.is_file() else {}
    template = meta.get("concept_template", TINYCLIP_CONCEPT_TEMPLATE)
    return engine.view("demo-tinyclip", (), template, f"demo-tinyclip: {engine.description}")


def build_tinyclip_species(settings: Settings) -> ClipPromptView:
    engine = tinyclip_engine(settings.torch_device)
    meta = tinyclip_meta()
    view = engine.view(
        "demo-tinyclip-species",
        meta["labels"],
        meta.get("species_template", TINYCLIP_SPECIES_TEMPLATE),
        f"demo-tinyclip-species: {engine.description}",
    )
    view.text_embeddings()
    return view


register_model(
    ModelSpec(
        name=DEMO_CNN_NAME,
        summary="Demo CNN (offline): small ResNet trained on synthetic look-alike birds",
        task="classifier",
        build=build_demo_cnn,
        offline=True,
        attention=False,
    )
)
register_model(
    ModelSpec(
        name=DEMO_VIT_NAME,
        summary="Demo ViT (offline): small hybrid ViT trained on synthetic look-alike birds",
        task="classifier",
        build=build_demo_vit,
        offline=True,
        attention=True,
    )
)
register_model(
    ModelSpec(
        name="demo-tinyclip",
        summary="Demo tiny CLIP (offline): concepts on synthetic birds ('a bird with a red crown')",
        task="concepts",
        build=build_tinyclip,
        offline=True,
        attention=True,
    )
)
register_model(
    ModelSpec(
        name="demo-tinyclip-species",
        summary="Demo tiny CLIP (offline): zero-shot classifier over the synthetic species",
        task="classifier",
        build=build_tinyclip_species,
        offline=True,
        attention=True,
    )
)
