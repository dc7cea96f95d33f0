"""``clip-vit-b16``: the CLIP of the settings as a concepts model (explain free-text prompts).

The CLIP is ``FINERCAM_CLIP_MODEL`` / ``FINERCAM_CLIP_PRETRAINED`` (OpenAI ViT-B/16 by default),
served by the offline ``demo-tinyclip`` when it cannot load.
"""

from __future__ import annotations

from app.config import Settings
from app.models.adapters.clip import ClipPromptView, settings_engine
from app.models.registry import ModelSpec, register_model


def _build_concepts(settings: Settings) -> ClipPromptView:
    engine = settings_engine(settings)
    return engine.view("clip-vit-b16", (), settings.clip_template)


register_model(
    ModelSpec(
        name="clip-vit-b16",
        summary="CLIP ViT-B/16 (OpenAI) zero-shot concepts: explain free-text prompts",
        task="concepts",
        build=_build_concepts,
        fallback="demo-tinyclip",
        attention=True,
    )
)
