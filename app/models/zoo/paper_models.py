"""The Finer-CAM paper's own classifiers: DINOv2 ViT-B/14 with the authors' linear heads.

``birds525-dinov2`` and ``cars196-dinov2`` are the models of the paper and of the authors' demo:
timm ``vit_base_patch14_dinov2.lvd142m`` at 224 px, features = the mean of the patch tokens
after the final norm (the authors' ``ModifiedDINO``), and a linear head released under
Apache-2.0 in Imageomics/Finer-CAM at commit :data:`HEADS_COMMIT`. Preprocessing is the
authors': the whole image resized to 224x224 (bicubic) with the CLIP mean/std.

The heads (plain ``{"weight", "bias"}`` tensor state dicts) are downloaded at run time from that
pinned commit (``FINERCAM_PAPER_HEADS_URL`` overrides the base URL, e.g. a mirror), their sha256
verified, and cached in ``finercam-heads/`` beside the Hub cache. Class names ship in
``assets/birds525_classes.txt`` and ``assets/cars196_classes.txt`` (the repository's
``class_names.py``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from app.config import Settings
from app.models.adapters.backbones import TimmBackbone
from app.models.adapters.clip import OPENAI_MEAN, OPENAI_STD
from app.models.adapters.linear_head import LinearHeadModel
from app.models.hub import policy as hub
from app.models.hub.loading import class_list, load_error, prepare
from app.models.registry import ModelSpec, register_model
from app.models.sharing import shared_instance
from app.models.weights import WeightsFileError, freeze

log = logging.getLogger(__name__)

HEADS_COMMIT = "564ad2c3e66e32304076bf3124acea596ff44f48"
HEADS_URL = (
    f"https://raw.githubusercontent.com/Imageomics/Finer-CAM/{HEADS_COMMIT}/classifier_weight/"
)
DINO = "vit_base_patch14_dinov2.lvd142m"
INPUT_SIZE = (224, 224)
DOWNLOAD_TIMEOUT_S = 10


@dataclass(frozen=True)
class PaperHead:
    """One released head: its file at the pinned commit, sha256 and class list."""

    file: str
    sha256: str
    classes: str


HEADS = {
    "birds525-dinov2": PaperHead(
        "classifier_birds_DINO.pth",
        "4497f2266b3d8879d467b7a4f10f9ba2f87004dc9a28644f6f786e50beb75353",
        "birds525",
    ),
    "cars196-dinov2": PaperHead(
        "classifier_cars_DINO.pth",
        "df8c621864b3824f962a09bdcb4814847f2015d5c7f2cb2e4d9d4a0f91c841d1",
        "cars196",
    ),
}


def heads_dir() -> Path:
    """``finercam-heads/`` beside the Hub cache (``$HF_HOME/hub`` ->
    ``$HF_HOME/finercam-heads``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).parent / "finercam-heads"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_head(head: PaperHead) -> Path:
    """The verified head file: from the cache, else downloaded from the pinned commit.

    A cached file with the wrong sha256 (cut download, tampering) is removed and fetched again;
    a download with the wrong sha256 is refused and not kept.
    """
    folder = heads_dir()
    path = folder / head.file
    if path.is_file():
        if _sha256(path) == head.sha256:
            return path
        log.warning("cached head %s has the wrong sha256; downloading it again", path)
        path.unlink()
    url = os.environ.get("FINERCAM_PAPER_HEADS_URL", HEADS_URL).rstrip("/") + "/" + head.file
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read()
    except OSError as error:
        raise OSError(
            f"could not download the Finer-CAM head {head.file} from {url}: {error}"
        ) from error
    digest = hashlib.sha256(data).hexdigest()
    if digest != head.sha256:
        raise WeightsFileError(
            f"the head downloaded from {url} has sha256 {digest[:12]}…, expected "
            f"{head.sha256[:12]}… (pinned commit {HEADS_COMMIT[:10]}); it was not used"
        )
    with tempfile.NamedTemporaryFile(dir=folder, delete=False) as handle:
        handle.write(data)
    os.replace(handle.name, path)
    return path


def load_paper_head(
    path: Path, classes: int, features: int = 768
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of an ``nn.Linear`` state dict saved with ``torch.save`` (weights only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickle, zip and IO errors alike
        raise WeightsFileError(f"{path} is not a weights-only torch file: {error}") from error
    if not isinstance(state, dict):
        raise WeightsFileError(f"{path} holds a {type(state).__name__}, not a state dict")
    weight, bias = state.get("weight"), state.get("bias")
    if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (classes, features):
        raise WeightsFileError(
            f"{path}: expected weight of shape ({classes}, {features}), got "
            f"{None if weight is None else tuple(weight.shape)}"
        )
    if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (classes,):
        raise WeightsFileError(f"{path}: expected bias of shape ({classes},)")
    return weight.float(), bias.float()


def mean_patch_backbone(
    model: torch.nn.Module, key: str, device: torch.device, description: str
) -> TimmBackbone:
    """A timm ViT created with ``global_pool="avg", fc_norm=False`` as the authors' backbone:
    features = mean of the patch tokens after the final norm, 224 px, CLIP mean/std."""
    if getattr(model, "global_pool", None) != "avg" or not isinstance(
        getattr(model, "fc_norm", None), torch.nn.Identity
    ):
        raise ValueError("the paper's backbone needs global_pool='avg' and fc_norm=False")
    return TimmBackbone(
        freeze(model), key, device, INPUT_SIZE, OPENAI_MEAN, OPENAI_STD, "bicubic", description
    )


def dinov2_backbone(device: torch.device) -> TimmBackbone:
    """DINOv2 ViT-B/14 from the Hub (timm), shared by both paper models."""
    hub_id = hub.HubId("timm", f"timm/{DINO}")

    def build() -> TimmBackbone:
        prepare(hub_id, allow_list=False)
        import timm  # slow to import: only once the weights are known to be reachable

        try:
            model = timm.create_model(
                DINO,
                pretrained=True,
                num_classes=0,
                dynamic_img_size=True,
                global_pool="avg",
                fc_norm=False,
            )
        except Exception as error:  # noqa: BLE001 - one clear message
            raise load_error(hub_id, error) from error
        return mean_patch_backbone(
            model,
            f"timm:{DINO}@hub-avgpatch",
            device,
            f"DINOv2 ViT-B/14 (mean of patch tokens, {device})",
        )

    return shared_instance(("paper-dinov2", str(device)), build)


def paper_model(name: str, head: PaperHead, backbone: TimmBackbone) -> LinearHeadModel:
    """The paper's classifier ``name``: the verified head on ``backbone``."""
    labels, _ = class_list(head.classes)
    weight, bias = load_paper_head(fetch_head(head), len(labels), backbone.feature_dim)
    return LinearHeadModel(
        backbone,
        weight,
        bias,
        labels,
        name,
        description=f"{name}: Finer-CAM authors' head on {backbone.description}",
    )


def _builder(name: str):
    def build(settings: Settings) -> LinearHeadModel:
        return paper_model(name, HEADS[name], dinov2_backbone(settings.torch_device))

    return build


# The classifier tab offers these first: see DEFAULT_MODELS in app.models.registry.
register_model(
    ModelSpec(
        name="cars196-dinov2",
        summary="Stanford Cars (196): the Finer-CAM paper's DINOv2 ViT-B/14 + linear head",
        task="classifier",
        build=_builder("cars196-dinov2"),
        fallback="demo-cnn",
    )
)
register_model(
    ModelSpec(
        name="birds525-dinov2",
        summary="Birds-525: the Finer-CAM paper's DINOv2 ViT-B/14 + linear head",
        task="classifier",
        build=_builder("birds525-dinov2"),
        fallback="demo-cnn",
    )
)
