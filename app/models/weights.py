"""Safe weight files: safetensors, or ``torch.load(weights_only=True)`` and nothing else.

A pickle that carries arbitrary objects is refused with a clear error, so a downloaded or
user-supplied checkpoint can never run code. :func:`freeze` readies a loaded module for
explanation (eval mode, no parameter gradients, no in-place ReLU).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch


class WeightsFileError(ValueError):
    """A local weights file is missing, unreadable, unsafe or does not fit the model."""


def load_tensor_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or a torch checkpoint loaded with ``weights_only``.

    Raises:
        WeightsFileError: the file does not exist, is not a weights file, or is a pickle that
            carries arbitrary Python objects (refused: ``torch.load(weights_only=True)``).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise WeightsFileError(f"{path} is not a readable safetensors file: {error}") from error
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightsFileError(
            f"refusing to load {path}: it is a pickle with objects other than tensors "
            f"(loaded with torch.load(weights_only=True)); convert it to .safetensors. "
            f"Detail: {str(error).splitlines()[0]}"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise WeightsFileError(f"{path} is not a readable torch checkpoint: {error}") from error
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(
        isinstance(v, torch.Tensor) for v in checkpoint.values()
    ):
        raise WeightsFileError(f"{path} does not hold a state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in checkpoint.items()}


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode and no parameter gradients: autograd then only ever reaches the leaf."""
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    for sub in module.modules():
        if isinstance(sub, torch.nn.ReLU):
            sub.inplace = False  # hooks (FG-CAM) see the pre-activation tensors intact
    return module
