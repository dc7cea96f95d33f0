"""BioCLIP (``hf-hub:imageomics/bioclip``), the Tree-of-Life CLIP of the Finer-CAM authors' group.

* ``bioclip-cub200``: species zero-shot over the 200 CUB-200 names. pybioclip's custom-label
  classifier averages the 80 OpenAI ImageNet templates per name; one template of that set,
  ``a photo of a {}.``, is used here so the 200 names encode in seconds on a CPU.
* ``bioclip``: the concept model (free-text prompts, ``FINERCAM_CLIP_TEMPLATE``).

Weights: BioCLIP publishes only ``open_clip_pytorch_model.bin`` (plain tensors), read with
``torch.load(weights_only=True)``; see :data:`app.models.hub.policy.VETTED_PICKLE_REPOS`.
"""

from __future__ import annotations

from app.config import Settings
from app.models.adapters.clip import ClipPromptView
from app.models.hub.loading import clip_view
from app.models.hub.policy import HubId
from app.models.registry import ModelSpec, register_model

BIOCLIP = HubId("open_clip", "imageomics/bioclip")
BIOCLIP_TEMPLATE = "a photo of a {}."


def build_species(settings: Settings) -> ClipPromptView:
    return clip_view(
        BIOCLIP,
        "cub200",
        settings.torch_device,
        settings,
        "bioclip-cub200",
        template=BIOCLIP_TEMPLATE,
        allow_list=False,
    )


def build_concepts(settings: Settings) -> ClipPromptView:
    return clip_view(BIOCLIP, None, settings.torch_device, settings, "bioclip", allow_list=False)


register_model(
    ModelSpec(
        name="bioclip-cub200",
        summary="CUB-200 birds: BioCLIP (Tree-of-Life CLIP) zero-shot over the 200 species",
        task="classifier",
        build=build_species,
        fallback="demo-cnn",
    )
)
register_model(
    ModelSpec(
        name="bioclip",
        summary="BioCLIP (imageomics/bioclip) concepts: explain free-text prompts",
        task="concepts",
        build=build_concepts,
        fallback="demo-tinyclip",
    )
)
