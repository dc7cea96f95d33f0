"""The offline demo models (weights shipped in ``assets/demo/``), registered by name.

* ``demo-cnn``: a small torchvision ResNet trained on the synthetic birds
  (:mod:`app.models.zoo.demo_cnn`).
* ``demo-vit``: a small hybrid timm ViT trained on the synthetic birds
  (:mod:`app.models.zoo.demo_vit`).
* ``demo-tinyclip``: the tiny CLIP trained on synthetic birds and captions, for the concepts
  tab. It is an open_clip model with a custom config, loaded through the same generic adapter
  as a real CLIP (``open_clip.create_model_and_transforms(name, pretrained=<safetensors>)``).
* ``demo-tinyclip-species``: the tiny CLIP as a zero-shot classifier over the synthetic species.
"""

from __future__ import annotations

from app.config import Settings
from app.models.adapters.clip import ClipPromptView, tinyclip_engine
from app.models.adapters.linear_head import LinearHeadModel
from app.models.adapters.torchvision_cnn import TorchvisionCNN
from app.models.registry import ModelSpec, register_model
from app.models.zoo.demo_assets import (
    DEMO_CNN_NAME,
    DEMO_VIT_NAME,
    TINYCLIP_META,
    tinyclip_meta,
)
from app.models.zoo.demo_cnn import load_demo_cnn
from app.models.zoo.demo_vit import load_demo_vit

#: The tiny CLIP learned raw captions ("a bird with a red crown"), so concept prompts are used
#: as typed unless its metadata names a template.
TINYCLIP_CONCEPT_TEMPLATE = "{}"
TINYCLIP_SPECIES_TEMPLATE = "a photo of a {}."


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
