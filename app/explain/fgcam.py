"""FG-CAM: carry CAM explanation components down to a finer layer or to the input pixels.

Method (Qiu, Jin & Zhang, "Empowering CAM-Based Methods with Capability to Generate Fine-Grained
and High-Faithfulness Explanations"; seed text in shared/seeds/fg-cam-paper-abstract.txt). We read
the reference code (github.com/dongmo-qcq/FG-CAM, VGG only) for its rules; this is our own
implementation of those rules, not a copy of that code.

1. At the target layer with activation ``A`` (shape ``(1, C, h, w)``) the explanation components are
   ``I_k = w_k * A_k``. ``w`` is any weight vector ``(C,)`` (Grad-CAM's mean gradients, Score-CAM's
   scores, Finer-CAM's ``alpha^c - gamma * sum_d w_d alpha^d``, ...) or an element-wise weight
   ``(C, h, w)``. ``sum_k I_k`` followed by a ReLU is exactly the CAM at that layer.
2. The components are carried down layer by layer to the input of ``layers[stop_at]``. The
   relevance tensor keeps each layer's channel dimension the whole way (it is never summed over
   channels on the way down); every rule below is linear in the relevance, so carrying the ``C``
   components one by one and summing them gives exactly the same tensor as carrying their stack
   once. We carry the stack once (what the reference does); :meth:`FGCAMTrace.propagate` also
   accepts a batch ``(N, C, h, w)`` of relevance tensors when each is wanted on its own.
3. The map is the sum over channels at the stop layer. The final ReLU is left to the caller
   (``relu=True`` applies it), matching the engine's "combine, then ReLU" pipeline.

Contribution rules (``x`` = the layer's recorded input from one no-grad forward pass, ``R`` = the
relevance at the layer's output, ``x+ = max(x, 0)``, ``x- = min(x, 0)``, ``W+ = max(W, 0)``,
``W- = min(W, 0)``; a zero denominator sends no relevance down from that output position):

* ``Conv2d`` (any stride, padding, dilation, groups; bias ignored), positive/negative split:
  ``z_ij = x+_i W+_ij + x-_i W-_ij`` (every term >= 0), ``R_i = sum_j z_ij / (sum_i' z_i'j) * R_j``.
* The input convolution (``layers[0]`` when it is a ``Conv2d``), bounded rule (LRP z^B):
  ``z_ij = (x_i - l_i) W+_ij + (x_i - h_i) W-_ij`` with ``l <= x <= h`` (every term >= 0). The
  bounds are ``input_bounds`` (e.g. the normalised images of 0 and 1 per channel), widened
  element-wise to contain ``x``; without them, the minimum and maximum of ``x`` (the reference's
  choice).
* ``MaxPool2d`` / ``AdaptiveMaxPool2d``: the window's maximum of ``x+`` receives all of ``R_j``
  (contribution ``x+_i`` over ``y_j = max x+``).
* ``AvgPool2d`` / ``AdaptiveAvgPool2d``: ``R_i = sum_j (a_ij x+_i) / y_j * R_j`` with ``a_ij`` the
  pooling coefficients and ``y_j = sum_i a_ij x+_i`` (in proportion to contribution).
* ``BatchNorm2d``, ``ReLU``, ``Dropout``/``Dropout2d`` (eval) and ``Identity`` pass ``R`` through.
* torchvision ``BasicBlock`` / ``Bottleneck`` (ResNet; our extension, the reference has VGG only):
  the block output ``relu(a + b)`` (``a`` main branch, ``b`` shortcut) passes its ReLU, the sum is
  treated as a convolution with weights ``(1, 1)`` under the same split rule, i.e.
  ``R_a = a+ / (a+ + b+) * R`` and ``R_b = b+ / (a+ + b+) * R``, then each branch is carried down
  with the rules above and the two results are added at the block input.

Every rule is conservative: the relevance a layer sends down sums to the relevance it received,
except at output positions whose denominator is zero (no positive contribution at all), whose
relevance is dropped. Biases and BN shifts never enter a denominator, so they absorb nothing.

SVD denoising (the paper's FG-CAM with denoising): before carrying them down, the components are
reshaped to the ``C x (h*w)`` matrix, each row is centred (its spatial mean removed; the reference
does not add it back, neither do we) and replaced by its best rank-``r`` approximation, with
``r = max(1, int(0.1 * min(C, h*w)))`` by default (the reference's 10 % of the singular values)
or ``denoise_rank``.

Correspondence with the reference code: its ``--target_layer t`` (map at the output of
``features[t]``, ``-1`` = the input) is our ``stop_at = t + 1`` with ``layers = model.features``;
it applies the bounded rule to any convolution with 3 input channels and keeps
``int(0.1 * min(C, h*w))`` singular values even when that is 0; we apply the bounded rule to
``layers[0]`` only, keep at least one singular value, and also handle dilation and groups.

Supported models: torchvision VGG (``model.features``), torchvision ResNet (stem and
``layer1..layer4`` blocks), and any ``nn.Sequential`` of the layers above (nested ``Sequential``
containers are flattened). Anything else, e.g. a ViT, raises :class:`FGCAMUnsupported` naming the
first module FG-CAM cannot carry relevance through. No hooks are used: the stack is run module by
module under ``torch.no_grad`` and each module's input is kept.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.models.vgg import VGG

__all__ = [
    "FGCAMTrace",
    "FGCAMUnsupported",
    "explanation_components",
    "fgcam",
    "record",
    "supported_layers",
    "svd_denoise",
]


class FGCAMUnsupported(ValueError):
    """The model (or one of its modules) is outside what FG-CAM can carry relevance through."""


_PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.BatchNorm2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
)
_MAX_POOLS: tuple[type[nn.Module], ...] = (nn.MaxPool2d, nn.AdaptiveMaxPool2d)
_AVG_POOLS: tuple[type[nn.Module], ...] = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_LEAVES: tuple[type[nn.Module], ...] = (nn.Conv2d, *_MAX_POOLS, *_AVG_POOLS, *_PASS_THROUGH)
_RESIDUAL_BLOCKS: tuple[type[nn.Module], ...] = (BasicBlock, Bottleneck)
_SUPPORTED_TEXT = (
    "FG-CAM walks plain CNN stacks: Conv2d, BatchNorm2d, ReLU, MaxPool2d, AvgPool2d, adaptive "
    "max/avg pooling, Dropout, Identity, and torchvision ResNet BasicBlock/Bottleneck blocks "
    "(torchvision VGG and ResNet models, or an nn.Sequential of those layers)"
)


# --------------------------------------------------------------------------------------------
# Model walking and validation


def _is_plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _flatten(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """(qualified name, module) pairs with nested plain ``nn.Sequential`` containers flattened."""
    if not _is_plain_sequential(module):
        return [(prefix, module)]
    named: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        named += _flatten(child, f"{prefix}.{name}" if prefix else name)
    return named


def _conv_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """The convolution's zero padding as two ints ('valid'/'same' resolved); raises if lopsided."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0)
        pads = []
        for k, d in zip(conv.kernel_size, conv.dilation, strict=True):
            total = d * (k - 1)
            if total % 2:
                raise FGCAMUnsupported("asymmetric padding='same' (even kernel) is not supported")
            pads.append(total // 2)
        return (pads[0], pads[1])
    return (int(conv.padding[0]), int(conv.padding[1]))


def _leaf_problem(module: nn.Module) -> str | None:
    """Why FG-CAM cannot carry relevance through ``module`` (``None`` when it can)."""
    base = next((cls for cls in _LEAVES if isinstance(module, cls)), None)
    if base is None:
        return "no contribution rule for this layer type"
    if type(module).forward is not base.forward:
        return f"it overrides {base.__name__}.forward, so the stock rule may not match it"
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r} (only 'zeros' is supported)"
        try:
            _conv_padding(module)
        except FGCAMUnsupported as error:
            return str(error)
    if isinstance(module, _MAX_POOLS) and module.return_indices:
        return "return_indices=True changes the layer's output"
    return None


def _block_branches(block: nn.Module) -> tuple[list[nn.Module], list[tuple[str, nn.Module]]]:
    """Main branch modules (torchvision's forward order) and the named shortcut modules."""
    if isinstance(block, Bottleneck):
        main = [
            block.conv1,
            block.bn1,
            block.relu,
            block.conv2,
            block.bn2,
            block.relu,
            block.conv3,
            block.bn3,
        ]
    else:
        main = [block.conv1, block.bn1, block.relu, block.conv2, block.bn2]
    skip = _flatten(block.downsample, "downsample") if block.downsample is not None else []
    return main, skip


def _check(named: Sequence[tuple[str, nn.Module]]) -> None:
    """Raise :class:`FGCAMUnsupported` for the first module FG-CAM cannot handle, ValueError for
    layers left in training mode."""
    for name, module in named:
        if type(module) in _RESIDUAL_BLOCKS:
            main, skip = _block_branches(module)
            inner = [(f"{name}.{i}", m) for i, m in enumerate(main)]
            _check(inner + [(f"{name}.{n}", m) for n, m in skip])
            continue
        problem = _leaf_problem(module)
        if problem is not None:
            raise FGCAMUnsupported(
                f"FG-CAM cannot propagate through module {name!r} ({type(module).__name__}): "
                f"{problem}. {_SUPPORTED_TEXT}."
            )
        if isinstance(module, (nn.BatchNorm2d, nn.Dropout, nn.Dropout2d)) and module.training:
            raise ValueError(
                f"module {name!r} ({type(module).__name__}) is in training mode; FG-CAM needs "
                "the model in eval mode (call model.eval())"
            )


def _first_unsupported(model: nn.Module) -> tuple[str, nn.Module] | None:
    for name, module in model.named_modules():
        if name and next(module.children(), None) is None and _leaf_problem(module) is not None:
            return name, module
    return None


def _resolve(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The flat, validated (name, module) stack of a supported model."""
    if isinstance(model, VGG):
        named = _flatten(model.features, "features")
    elif (
        isinstance(model, ResNet)
        and type(model).forward is ResNet.forward
        and type(model)._forward_impl is ResNet._forward_impl
    ):
        named = [(n, getattr(model, n)) for n in ("conv1", "bn1", "relu", "maxpool")]
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            named += _flatten(getattr(model, stage), stage)
    elif _is_plain_sequential(model):
        named = _flatten(model)
    else:
        found = _first_unsupported(model)
        detail = (
            f"its first module FG-CAM cannot propagate through is {found[0]!r} "
            f"({type(found[1]).__name__})"
            if found
            else f"{type(model).__name__}.forward is not a plain sequence FG-CAM can follow; pass "
            "its convolutional stack as an nn.Sequential (e.g. model.features)"
        )
        raise FGCAMUnsupported(
            f"FG-CAM cannot explain {type(model).__name__}: {detail}. {_SUPPORTED_TEXT}."
        )
    if not named:
        raise FGCAMUnsupported("FG-CAM needs at least one layer; the stack is empty")
    _check(named)
    return named


def supported_layers(model: nn.Module) -> nn.Sequential:
    """The flat conv stack FG-CAM walks for ``model``.

    torchvision VGG -> ``model.features`` (flattened); torchvision ResNet -> ``conv1, bn1, relu,
    maxpool`` followed by every block of ``layer1..layer4``; a plain ``nn.Sequential`` -> itself
    with nested ``Sequential`` containers flattened. Slice the result to end at the target layer
    (``supported_layers(vgg)[:44]``). Raises :class:`FGCAMUnsupported` naming the first module
    FG-CAM cannot handle (ViTs, custom layers, Linear heads) and ValueError for BN/Dropout layers
    in training mode. The modules are shared with ``model``, not copied.
    """
    return nn.Sequential(*(module for _, module in _resolve(model)))


# --------------------------------------------------------------------------------------------
# Recording (one no-grad forward pass)


@dataclass
class _Step:
    """One module of the stack with its recorded input (and branch records for residual blocks)."""

    module: nn.Module
    x: Tensor
    main: list[_Step] = field(default_factory=list)
    skip: list[_Step] = field(default_factory=list)
    a: Tensor | None = None  # residual blocks: main-branch output
    b: Tensor | None = None  # residual blocks: shortcut output
    nonnegative: bool = False  # x is known to be >= 0 (it comes from a ReLU, maybe via pooling)
    signed_weights: dict[bool, Tensor] = field(default_factory=dict)  # conv: W+ / W-, on demand

    def positive_input(self) -> Tensor:
        """``max(x, 0)``; ``x`` itself (no copy) when it has no negative part."""
        x = self.x
        return x if self.nonnegative or bool(x.amin() >= 0) else x.clamp(min=0)

    def weight_part(self, positive: bool) -> Tensor:
        """``W+`` or ``W-`` of this step's convolution, kept for later explanations."""
        if positive not in self.signed_weights:
            weight = self.module.weight.detach()
            self.signed_weights[positive] = weight.clamp(min=0) if positive else weight.clamp(max=0)
        return self.signed_weights[positive]


#: Layers whose output is >= 0 when their input is.
_KEEP_SIGN: tuple[type[nn.Module], ...] = (
    *_MAX_POOLS,
    *_AVG_POOLS,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
)


def _run(
    modules: Sequence[nn.Module], x: Tensor, nonnegative: bool = False
) -> tuple[list[_Step], Tensor]:
    """Run ``modules`` on ``x`` (under no_grad), keeping each module's input."""
    steps: list[_Step] = []
    for module in modules:
        if type(module) in _RESIDUAL_BLOCKS:
            main, skip = _block_branches(module)
            main_steps, a = _run(main, x, nonnegative)
            skip_steps, b = _run([m for _, m in skip], x, nonnegative)
            steps.append(_Step(module, x, main_steps, skip_steps, a, b, nonnegative))
            x = F.relu(a + b)
            nonnegative = True
        else:
            steps.append(_Step(module, x, nonnegative=nonnegative))
            if isinstance(module, nn.ReLU):  # never in place: that would overwrite a recorded input
                x = torch.relu(x)
            else:
                x = module(x.clone() if getattr(module, "inplace", False) else x)
            keeps_sign = nonnegative and isinstance(module, _KEEP_SIGN)
            nonnegative = isinstance(module, nn.ReLU) or keeps_sign
    return steps, x


# --------------------------------------------------------------------------------------------
# Contribution rules; relevance ``r`` is (N, C, h, w), recorded inputs are (1, C', H, W)


def _ratio(r: Tensor, den: Tensor) -> Tensor:
    """``r / den`` where ``den > 0``, ``r`` itself where ``den == 0`` (``den >= 0`` always).

    A zero denominator means every contribution to that output is exactly zero, so whatever the
    ratio is there, multiplying it back by the contributions sends nothing down: the relevance
    of that position is dropped. ``den`` is a fresh tensor and is overwritten.
    """
    return r / den.masked_fill_(den == 0, 1.0)


def _conv_rule(step: _Step, r: Tensor, bounds: tuple[Tensor, Tensor] | None) -> Tensor:
    conv, x = step.module, step.x
    geometry = {
        "stride": conv.stride,
        "padding": _conv_padding(conv),
        "dilation": conv.dilation,
        "groups": conv.groups,
    }
    if bounds is not None:  # bounded (z^B) rule: x - l >= 0 pairs with W+, x - h <= 0 with W-
        terms = [(x - bounds[0], step.weight_part(True)), (x - bounds[1], step.weight_part(False))]
    else:  # positive/negative split; ReLU outputs have no negative part (and need no W-)
        x_pos = step.positive_input()
        terms = [(x_pos, step.weight_part(True))]
        if x_pos is not x:
            terms.append((x.clamp(max=0), step.weight_part(False)))
    den = F.conv2d(terms[0][0], terms[0][1], None, **geometry)
    for xi, wi in terms[1:]:
        den += F.conv2d(xi, wi, None, **geometry)
    s = _ratio(r, den)
    size = (r.shape[0], *x.shape[1:])
    out = torch.nn.grad.conv2d_input(size, terms[0][1], s, **geometry).mul_(terms[0][0])
    for xi, wi in terms[1:]:
        out.addcmul_(xi, torch.nn.grad.conv2d_input(size, wi, s, **geometry))
    return out


def _max_pool_rule(step: _Step, r: Tensor) -> Tensor:
    pool, x, x_pos = step.module, step.x, step.positive_input()
    if isinstance(pool, nn.MaxPool2d):
        y, index = F.max_pool2d(
            x_pos,
            pool.kernel_size,
            pool.stride,
            pool.padding,
            pool.dilation,
            ceil_mode=pool.ceil_mode,
            return_indices=True,
        )
    else:
        y, index = F.adaptive_max_pool2d(x_pos, pool.output_size, return_indices=True)
    n, c = r.shape[:2]
    sent = torch.where(y > 0, r, 0.0).flatten(2)
    out = torch.zeros((n, c, x.shape[2] * x.shape[3]), dtype=r.dtype, device=r.device)
    out.scatter_add_(2, index.flatten(2).expand(n, -1, -1), sent)
    return out.view(n, *x.shape[1:])


def _avg_pool_rule(step: _Step, r: Tensor) -> Tensor:
    pool, x, x_pos = step.module, step.x, step.positive_input()
    s = _ratio(r, pool(x_pos))
    # The pooling is linear: its transpose is the gradient of the pool at any point.
    z = torch.zeros((r.shape[0], *x.shape[1:]), dtype=r.dtype, device=r.device, requires_grad=True)
    with torch.enable_grad():
        (transposed,) = torch.autograd.grad(pool(z), z, s)
    return transposed.mul_(x_pos)


def _back(
    steps: Sequence[_Step], r: Tensor, stop_at: int, bounds: tuple[Tensor, Tensor] | None
) -> Tensor:
    """Carry ``r`` from the output of ``steps[-1]`` to the input of ``steps[stop_at]``; ``bounds``
    switches ``steps[0]`` to the bounded rule when it is a convolution."""
    for index in range(len(steps) - 1, stop_at - 1, -1):
        step = steps[index]
        module = step.module
        if type(module) in _RESIDUAL_BLOCKS:
            assert step.a is not None and step.b is not None
            a_pos, b_pos = step.a.clamp(min=0), step.b.clamp(min=0)
            s = _ratio(r, a_pos + b_pos)
            r = _back(step.main, s * a_pos, 0, None) + _back(step.skip, s * b_pos, 0, None)
        elif isinstance(module, nn.Conv2d):
            r = _conv_rule(step, r, bounds if index == 0 else None)
        elif isinstance(module, _MAX_POOLS):
            r = _max_pool_rule(step, r)
        elif isinstance(module, _AVG_POOLS):
            r = _avg_pool_rule(step, r)
        # everything else passes through (validated in _check)
    return r


# --------------------------------------------------------------------------------------------
# Public API


def explanation_components(activation: Tensor, weights: Tensor) -> Tensor:
    """``I_k = w_k * A_k``: ``(K, C, h, w)`` components for one activation ``(1, C, h, w)``.

    ``weights`` is ``(C,)`` per channel or ``(C, h, w)`` element-wise (K = 1), or a batch of
    those, ``(K, C)`` / ``(K, C, h, w)``. Raises ValueError naming ``weights`` on a shape mismatch.
    """
    c, h, w = activation.shape[1:]
    if not isinstance(weights, Tensor):
        raise ValueError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
    shape = tuple(weights.shape)
    if shape in ((c,), (c, h, w)):
        weights = weights.unsqueeze(0)
    elif not (len(shape) in (2, 4) and shape[1:] in ((c,), (c, h, w))):
        raise ValueError(
            f"weights must have shape (C,) = ({c},) or (C, h, w) = {(c, h, w)} for the target "
            f"activation (optionally with a leading batch dimension); got {shape}"
        )
    weights = weights.detach().to(device=activation.device, dtype=activation.dtype)
    if weights.ndim == 2:
        weights = weights[:, :, None, None]
    return weights * activation


def svd_denoise(components: Tensor, rank: int | None = None) -> Tensor:
    """The paper's denoising: centre each component's row of the ``C x (h*w)`` matrix and keep its
    best rank-``rank`` approximation (default ``max(1, int(0.1 * min(C, h*w)))``).

    ``components`` is ``(C, h, w)`` or a batch ``(K, C, h, w)``; the result has the same shape and,
    per item, matrix rank at most ``rank``. The row means are not added back (as in the reference).
    """
    if components.ndim not in (3, 4):
        shape = tuple(components.shape)
        raise ValueError(f"components must be (C, h, w) or (K, C, h, w); got {shape}")
    matrix = components.flatten(-2)
    matrix = matrix - matrix.mean(dim=-1, keepdim=True)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    if rank is None:
        rank = max(1, int(0.1 * s.shape[-1]))
    elif isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"denoise_rank must be a positive int or None; got {rank!r}")
    rank = min(rank, s.shape[-1])
    low = (u[..., :rank] * s[..., None, :rank]) @ vh[..., :rank, :]
    return low.view(components.shape)


def _bounds(x: Tensor, input_bounds: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
    if input_bounds is None:
        return x.amin(), x.amax()
    if not (isinstance(input_bounds, (tuple, list)) and len(input_bounds) == 2):
        raise ValueError("input_bounds must be a (low, high) pair of tensors or None")
    channels = x.shape[1]
    pair = []
    for bound in input_bounds:
        bound = torch.as_tensor(bound, dtype=x.dtype, device=x.device)
        if bound.ndim == 1 and bound.numel() == channels:
            bound = bound.view(1, channels, 1, 1)
        try:
            fits = torch.broadcast_shapes(bound.shape, x.shape) == x.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"input_bounds entries must broadcast to the input {tuple(x.shape)} (a scalar, "
                f"({channels},) per channel, or a full tensor); got {tuple(bound.shape)}"
            )
        pair.append(bound)
    low, high = pair
    if bool((low > high).any()):
        raise ValueError("input_bounds: low must not exceed high")
    # Widen to contain x so every bounded-rule term stays >= 0 (e.g. resampling overshoot).
    return torch.minimum(low, x), torch.maximum(high, x)


class FGCAMTrace:
    """One recorded no-grad forward pass through a supported stack; explains any number of
    weight vectors (CAM, Finer-CAM, ...) at any stop layer without running the model again.

    Attributes:
        activation: The target layer's output ``A``, ``(1, C, h, w)`` (usable as the trunk output,
            so the engine need not run the trunk a second time).
        names: Qualified module names of the flat stack; ``names[i]`` is the layer whose input
            resolution ``stop_at=i`` returns (``len(trace)`` = the target layer itself).
    """

    def __init__(self, layers: nn.Module, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[0] != 1:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a (1, C, H, W) image batch; got {shape}")
        named = _resolve(layers)
        self.names: list[str] = [name for name, _ in named]
        with torch.no_grad():
            self._steps, activation = _run([module for _, module in named], x)
        self.activation: Tensor = activation  # (1, C, h, w), the target layer's output
        self.x = x

    def __len__(self) -> int:
        return len(self._steps)

    def nbytes(self) -> int:
        """Memory held by the recorded layer inputs (for a cache's byte bound)."""

        def held(steps: Sequence[_Step]) -> int:
            return sum(
                s.x.numel() * s.x.element_size() + held(s.main) + held(s.skip) for s in steps
            )

        return held(self._steps) + self.activation.numel() * self.activation.element_size()

    def _check_stop(self, stop_at: int) -> int:
        try:
            if isinstance(stop_at, bool):
                raise TypeError
            stop = operator.index(stop_at)
        except TypeError:
            raise ValueError(f"stop_at must be an int, got {type(stop_at).__name__}") from None
        if not 0 <= stop <= len(self):
            raise ValueError(
                f"stop_at must be in 0..{len(self)} (0 = the input image, {len(self)} = the target "
                f"layer itself); got {stop}"
            )
        return stop

    def resolution(self, stop_at: int) -> tuple[int, int]:
        """``(h', w')`` of maps returned for ``stop_at``."""
        stop = self._check_stop(stop_at)
        tensor = self.activation if stop == len(self) else self._steps[stop].x
        return (tensor.shape[2], tensor.shape[3])

    def propagate(
        self,
        relevance: Tensor,
        stop_at: int = 0,
        *,
        input_bounds: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Carry a batch of relevance tensors ``(N, C, h, w)`` at the target layer down to the
        input of ``layers[stop_at]``: ``(N, C', h', w')``, channels kept (no sum)."""
        stop = self._check_stop(stop_at)
        expected = tuple(self.activation.shape[1:])
        if relevance.ndim != 4 or tuple(relevance.shape[1:]) != expected:
            raise ValueError(f"relevance must be (N, *{expected}); got {tuple(relevance.shape)}")
        with torch.no_grad():
            bounds = _bounds(self.x, input_bounds)  # validated even where unused
            return _back(self._steps, relevance, stop, bounds)

    def explain(
        self,
        weights: Tensor,
        *,
        stop_at: int = 0,
        denoise: bool = False,
        denoise_rank: int | None = None,
        input_bounds: tuple[Tensor, Tensor] | None = None,
        relu: bool = False,
    ) -> Tensor:
        """The FG-CAM map at the input resolution of ``layers[stop_at]``.

        ``weights`` ``(C,)`` or ``(C, h, w)`` gives one map ``(h', w')``; a batch ``(K, C)`` /
        ``(K, C, h, w)`` gives ``(K, h', w')`` from one propagation. See :func:`fgcam`.
        """
        stop = self._check_stop(stop_at)
        components = explanation_components(self.activation, weights)
        if denoise:
            components = svd_denoise(components, denoise_rank)
        maps = self.propagate(components, stop, input_bounds=input_bounds).sum(dim=1)
        if relu:
            maps = maps.clamp(min=0)
        return maps[0] if weights.ndim in (1, 3) else maps


def named_stack(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The flat (name, module) stack FG-CAM walks; entry i is what ``stop_at=i`` refers to."""
    return _resolve(model)


def record(layers: nn.Module, x: Tensor) -> FGCAMTrace:
    """Run ``layers`` once (no grad, no hooks) on ``x`` and keep every layer's input."""
    return FGCAMTrace(layers, x)


def fgcam(
    layers: nn.Module,
    x: Tensor,
    weights: Tensor,
    *,
    stop_at: int = 0,
    denoise: bool = False,
    denoise_rank: int | None = None,
    input_bounds: tuple[Tensor, Tensor] | None = None,
    relu: bool = False,
) -> Tensor:
    """FG-CAM map of ``x`` for per-channel (or element-wise) CAM ``weights``.

    Args:
        layers: The plain stack ending at the target layer (its output is the activation ``A``,
            ``(1, C, h, w)``): an ``nn.Sequential`` of supported layers, or a torchvision VGG /
            ResNet (then its whole conv trunk; see :func:`supported_layers`).
        x: The normalised input ``(1, C_in, H, W)``.
        weights: ``(C,)`` per-channel weights (Grad-CAM, Finer-CAM, Score-CAM, ...) or ``(C, h, w)``
            element-wise weights; components are ``I_k = w_k * A_k``.
        stop_at: Return the map at the input resolution of ``layers[stop_at]``: 0 = the input
            image, ``len(layers)`` = the target layer itself (then the map is ``sum_k w_k A_k``,
            i.e. the CAM before its ReLU).
        denoise: Apply :func:`svd_denoise` to the components first (FG-CAM with denoising).
        denoise_rank: Rank kept by the denoising (default: 10 % of ``min(C, h*w)``, at least 1).
        input_bounds: ``(low, high)`` bounds of the input values for the bounded rule at the
            input convolution (scalars, per channel ``(C_in,)``, or full tensors), e.g. the
            normalised images of pixel values 0 and 1. Default: ``x.min()``, ``x.max()``.
        relu: Apply the final ReLU (default off: the engine combines, then applies ReLU).

    Returns:
        ``(h', w')`` map. Raises :class:`FGCAMUnsupported` for models it cannot walk and
        ValueError naming the bad argument otherwise.
    """
    return record(layers, x).explain(
        weights,
        stop_at=stop_at,
        denoise=denoise,
        denoise_rank=denoise_rank,
        input_bounds=input_bounds,
        relu=relu,
    )
