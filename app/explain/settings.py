"""What shapes a map besides the image and the model, checked in one step.

:meth:`ExplainSettings.validated` checks and normalises every field at once; the service calls
it where a request enters, and everything after it (the service, the methods) trusts the
settings. Only what depends on the model (T against its class count, class names, attention
blocks, pooling) is checked when the model is known.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from app.explain import inputs
from app.explain.methods import get_method
from app.explain.references import REFERENCE_MODES, WEIGHTINGS
from app.explain.render import DEFAULT_COLORMAP, validate_colormap


@dataclass(frozen=True)
class ExplainSettings:
    """Everything that shapes a map besides the image and the model.

    Attributes:
        method: CAM method name (see :data:`app.explain.methods.METHODS`).
        gamma: Contrast strength γ (0 gives plain CAM).
        top_t: T, the number of reference classes.
        reference_mode: ``logits`` | ``weights`` | ``manual``.
        weighting: ``uniform`` | ``probability``.
        target: Class to explain (index or name); ``None`` = the predicted class.
        manual_references: Classes (indices or names) for ``reference_mode="manual"``.
        opacity: Heat-map opacity of the overlays, in [0, 1].
        fgcam: Raise both maps to a higher resolution with FG-CAM (plain CNNs and ResNets).
        fgcam_stop: FG-CAM's output layer: 0 = the input image (full resolution), i = the input
            of the i-th layer of the model's FG-CAM stack (see ``fgcam_stops``).
        fgcam_denoise: FG-CAM's SVD denoising of the components.
        pooling: For CLIP models, what is explained: ``token`` (the class token, what CLIP
            computes) or ``avg`` (the average-pooled surrogate of the official Finer-CAM CLIP
            tutorial); ``None`` keeps the model's own.
        attention_blocks: How many of a ViT's last blocks LeGrad / attention-gradient read;
            ``None`` = the method's default (its ``default_blocks``).
        colormap: Colour map of the overlays (:data:`app.explain.render.COLORMAPS`; jet, the
            paper's, by default). Only colours: a new map re-renders from the cache.

    Building settings checks nothing (a form can hold a bad value until it is used);
    :meth:`validated` does.
    """

    method: str = "gradcam"
    gamma: float = 0.6
    top_t: int = 3
    reference_mode: str = "logits"
    weighting: str = "uniform"
    target: int | str | None = None
    manual_references: tuple[int | str, ...] = ()
    opacity: float = 0.5
    fgcam: bool = False
    fgcam_stop: int = 0
    fgcam_denoise: bool = False
    pooling: str | None = None
    attention_blocks: int | None = None
    colormap: str = DEFAULT_COLORMAP

    def validated(self) -> ExplainSettings:
        """These settings with every field checked and normalised (the method's canonical name,
        γ and opacity as floats, counts as ints); InvalidInputError naming the first bad field."""
        checked = {
            field.name: _CHECKS[field.name](getattr(self, field.name))
            for field in fields(self)
            if field.name in _CHECKS
        }
        if checked["reference_mode"] == "manual" and not self.manual_references:
            raise inputs.InvalidInputError("Pick at least one reference class for manual mode.")
        return replace(self, **checked)


def _choice(name: str, choices: tuple[str, ...]):
    def check(value: str) -> str:
        if value not in choices:
            raise inputs.InvalidInputError(
                f"{name} must be one of {', '.join(choices)}, got {value!r}"
            )
        return value

    return check


def _blocks(value: int | None) -> int | None:
    if value is None:
        return None
    blocks = inputs.validate_index(value, name="attention_blocks")
    if blocks < 1:
        raise inputs.InvalidInputError(f"attention_blocks must be at least 1 (got {blocks}).")
    return blocks


_CHECKS = {
    "method": lambda value: get_method(value).name,
    "gamma": inputs.validate_gamma,
    "top_t": lambda value: inputs.validate_count(value, name="T"),
    "reference_mode": _choice("reference mode", REFERENCE_MODES),
    "weighting": _choice("weighting", WEIGHTINGS),
    "opacity": inputs.validate_opacity,
    "fgcam_stop": lambda value: inputs.validate_index(value, name="fgcam_stop"),
    "attention_blocks": _blocks,
    "colormap": validate_colormap,
}
