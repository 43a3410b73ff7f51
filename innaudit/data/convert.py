"""Conversion rules: a data set's samples shaped and scaled to the model's domain, or refused.

Every data set goes through :func:`plan_conversion` before any audit starts. The plan says, in
words the report records per set (``run.datasets[i].transform``), what was done; anything the
rules below cannot convert is refused with one line. A sample is never reshaped in memory
order across axes (a ``(32, 32, 3)`` image read as ``(3, 32, 32)`` scrambles its pixels).

Layout (``s`` = one sample's shape, ``D`` = the model's; an *image* model takes ``(C, H, W)``
with ``C`` in 1, 3, 4):

1. ``s == D``: as is.
2. ``s`` and ``D`` differ only by size-1 axes (``(8, 8)`` for ``(1, 8, 8)``): those axes are
   added or dropped; the order of the values is the same.
3. a flat ``s`` of ``C H W`` values for a one-channel image model, or a one-channel image for
   a flat model: unflattened / flattened row-major (there is no channel order to guess). A
   flat colour image is refused: CIFAR's rows are CHW, most others HWC.
4. an image ``s`` for an image model: ``(c, h, w)`` when only ``s[0]`` is 1, 3 or 4,
   ``(h, w, c)`` when only ``s[2]`` is (transposed to CHW), ``(h, w)`` as one channel; a file
   format that fixes its layout (CIFAR rows are CHW, SVHN's ``.mat`` is HWCN) says so itself.
   Then, in this order:

   - channels: grey to RGB by repeating the channel, RGB to grey by ITU-R 601-2 luma
     ``L = 0.299 R + 0.587 G + 0.114 B`` (Pillow's ``convert("L")``), RGBA drops alpha;
   - size: the image is scaled by ``s = max(H / h, W / w)`` to ``(round(h s), round(w s))``
     with Pillow's bilinear filter (antialiased when shrinking; a weighted mean of pixels, so
     values stay in their range), then the centre ``H x W`` is cropped (offsets
     ``(h' - H) // 2``, ``(w' - W) // 2``). 8-bit images are resized as 8-bit images, others
     channel by channel in float32.

Values (the model's range ``[low, high]``, width ``w``, ``L`` levels):

- ``uint8`` (and whole numbers in 0..255, some above 1, that the model's range does not
  hold): 8-bit pixels ``k``.
  With ``L = 256``: ``low + w k / 256`` (the lower edge of bin ``k``, the convention of the
  built-in sets); with no levels: ``low + w k / 255``; with other ``L``: ``k`` is quantized to
  ``floor(k L / 256)`` (Glow's ``n_bits`` reduction) and mapped to ``low + w k' / L``. A model
  whose range holds 0..255 takes them as they are.
- values inside ``[low, high]`` (to within ``1e-5 w``): as they are.
- values outside it that one of the standard ranges ``[0, 1]``, ``[-0.5, 0.5]``, ``[-1, 1]``,
  ``[0, 255]`` holds (the smallest such): mapped linearly onto ``[low, high]``
  (``[-1, 1]`` to ``[0, 1]`` is ``(x + 1) / 2``).
  This rescaling is for the in-distribution set only: an OOD set outside the model's range is
  a probe of values the model never saw, so it is used as given.
- anything else: refused for the in-distribution set; an OOD set is used as given and the
  report says its values lie outside the model's range.
- a model that declares its shape but not its range (``DataDomain.assumed_range``): values are
  used as given (there is no range to check them against), and the report says so.

Reference for the conventions: Behrmann et al., "Understanding and Mitigating Exploding Inverses
in Invertible Neural Networks", AISTATS 2021, https://arxiv.org/abs/2006.09347 (its code maps
CIFAR-10 / SVHN / DTD pixels ``k`` to ``k / 255 - 0.5`` for Glow and ``k / 256`` for ResFlows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from innaudit.core.domain import DataDomain
from innaudit.core.errors import DataError

__all__ = [
    "IMAGE_CHANNELS",
    "STANDARD_RANGES",
    "Conversion",
    "ValueScan",
    "fit_image",
    "image_shape",
    "plan_conversion",
    "resize_image",
    "resized_size",
    "to_channels",
]

IMAGE_CHANNELS = (1, 3, 4)
STANDARD_RANGES = ((0.0, 1.0), (-0.5, 0.5), (-1.0, 1.0), (0.0, 255.0))
_TOL = 1e-5
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ValueScan:
    """What the values of the samples used are: their dtype kind, extremes, whether integer."""

    kind: str  # numpy dtype kind: "u", "i", "f", "b"
    itemsize: int
    low: float
    high: float
    integral: bool

    @property
    def uint8(self) -> bool:
        """True for 8-bit pixels: a ``uint8`` array."""
        return self.kind == "u" and self.itemsize == 1


def image_shape(domain: DataDomain) -> tuple[int, int, int] | None:
    """``(C, H, W)`` when the model takes images (3-D input, C in 1, 3, 4), else None."""
    shape = tuple(int(s) for s in domain.shape)
    if len(shape) == 3 and shape[0] in IMAGE_CHANNELS and shape[1] >= 2 and shape[2] >= 2:
        return shape[0], shape[1], shape[2]
    return None


def resized_size(h: int, w: int, target_h: int, target_w: int) -> tuple[int, int]:
    """The size an ``h x w`` image is scaled to before its centre ``target_h x target_w`` crop."""
    scale = max(target_h / h, target_w / w)
    return max(target_h, round(h * scale)), max(target_w, round(w * scale))


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(s for s in shape if s != 1)


@dataclass(frozen=True)
class Conversion:
    """How one set's samples become model inputs (see the module docstring).

    Attributes:
        layout: ``"as-is"``, ``"reshape"`` (size-1 axes or a row-major one-channel flatten),
            ``"chw"``, ``"hwc"`` or ``"hw"`` (an image, converted by the image steps).
        source_image: ``(c, h, w)`` of a source image, for the image steps.
        scale: ``(kind, a, b)``: ``"as-is"``, ``"8bit"`` or ``"linear"`` from ``[a, b]``.
        notes: what the report records, in order.
        remark: a sentence for the set's note that is not a conversion (an unchecked range).
    """

    domain: DataDomain
    layout: str
    source_image: tuple[int, int, int] | None
    scale: tuple[str, float, float]
    notes: tuple[str, ...]
    remark: str = ""

    def apply(self, raw: Any) -> Tensor:
        """``raw`` (a batch of samples as read) as float32 model inputs ``(n, *domain.shape)``."""
        array = raw.numpy() if isinstance(raw, Tensor) else np.asarray(raw)
        n = int(array.shape[0])
        if self.layout in ("as-is", "reshape"):
            out = array.reshape(n, *self.domain.shape)
        else:
            out = self._image(array)
        return torch.from_numpy(self._scaled(out))

    def _image(self, array: np.ndarray) -> np.ndarray:
        shape = image_shape(self.domain)
        assert shape is not None and self.source_image is not None
        channels, height, width = shape
        if self.layout == "hw":
            hwc = array[..., None]
        elif self.layout == "chw":
            hwc = np.moveaxis(array, 1, 3)
        else:
            hwc = array
        hwc = to_channels(hwc, channels)
        if hwc.shape[1:3] != (height, width):
            hwc = np.stack([resize_image(sample, height, width) for sample in hwc])
        return np.ascontiguousarray(np.moveaxis(hwc, 3, 1))

    def _scaled(self, x: np.ndarray) -> np.ndarray:
        kind, a, b = self.scale
        d = self.domain
        if kind == "8bit":
            k = x.astype(np.float64)
            if d.levels is None:
                return (d.low + d.width * k / 255.0).astype(np.float32)
            if d.levels != 256:
                k = np.floor(k * d.levels / 256.0)
            return (d.low + d.width * k / d.levels).astype(np.float32)
        if kind == "linear":
            return (d.low + d.width * (x.astype(np.float64) - a) / (b - a)).astype(np.float32)
        return x.astype(np.float32)


def to_channels(hwc: np.ndarray, channels: int) -> np.ndarray:
    """A batch ``(n, h, w, c)`` to ``channels`` channels by the module docstring's rules."""
    c = hwc.shape[3]
    if c == 4:
        hwc, c = hwc[..., :3], 3
    if c == channels:
        return hwc
    if c == 1 and channels == 3:
        return np.repeat(hwc, 3, axis=3)
    if c == 3 and channels == 1:
        luma = hwc.astype(np.float64) @ np.array(_LUMA)
        if hwc.dtype == np.uint8:  # as Pillow: rounded to 8 bits
            return np.clip(np.floor(luma + 0.5), 0, 255).astype(np.uint8)[..., None]
        return luma.astype(np.float32)[..., None]
    raise DataError(f"cannot convert {c}-channel images to {channels} channels")


def resize_image(hwc: np.ndarray, height: int, width: int) -> np.ndarray:
    """One ``(h, w, c)`` image scaled (bilinear) and centre-cropped to ``height x width``."""
    from PIL import Image

    h, w = hwc.shape[:2]
    new_h, new_w = resized_size(h, w, height, width)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    box = (left, top, left + width, top + height)
    if (new_h, new_w) == (h, w):
        return hwc[top : top + height, left : left + width]
    if hwc.dtype == np.uint8:
        mode = "L" if hwc.shape[2] == 1 else "RGB"
        image = Image.fromarray(hwc[..., 0] if mode == "L" else hwc, mode)
        out = np.asarray(image.resize((new_w, new_h), Image.Resampling.BILINEAR).crop(box))
        return out[..., None] if mode == "L" else out
    planes = [
        np.asarray(
            Image.fromarray(hwc[..., i].astype(np.float32), "F")
            .resize((new_w, new_h), Image.Resampling.BILINEAR)
            .crop(box)
        )
        for i in range(hwc.shape[2])
    ]
    return np.stack(planes, axis=2)


def fit_image(image: Any, channels: int, height: int, width: int) -> np.ndarray:
    """A decoded Pillow image as ``(height, width, channels)`` uint8: converted to RGB or grey
    (``convert("RGB")`` / ``convert("L")``, palette and alpha resolved by Pillow), then resized
    and centre-cropped as the module docstring says."""
    mode = "L" if channels == 1 else "RGB"
    converted = image.convert(mode)
    array = np.asarray(converted, dtype=np.uint8)
    hwc = array[..., None] if mode == "L" else array
    if channels == 4:
        raise DataError("decoded images feed 1- or 3-channel models; this model takes 4 channels")
    if hwc.shape[:2] != (height, width):
        hwc = resize_image(hwc, height, width)
    return hwc


def _layout(
    shape: tuple[int, ...], domain: DataDomain, source: str, hint: str | None
) -> tuple[str, tuple[int, int, int] | None, list[str]]:
    """The layout of samples of ``shape`` for ``domain`` (module docstring, rules 1-4)."""
    target = tuple(int(s) for s in domain.shape)
    if shape == target:
        return "as-is", None, []
    numel = math.prod(shape)
    if numel == domain.numel and _squeezed(shape) == _squeezed(target):
        return "reshape", None, [f"size-1 axes added/removed: {shape} -> {target}"]
    image = image_shape(domain)
    if image is None:
        return _flat_layout(shape, target, numel, domain, source)
    if len(shape) == 1 and numel == domain.numel:
        if image[0] == 1:
            return "reshape", None, [f"unflattened row-major: {shape} -> {target} (one channel)"]
        raise DataError(
            f"{source} has flat samples of {numel} values; a flattened colour image may be in "
            f"CHW order (CIFAR's rows) or HWC order, so it is not guessed: reshape it to "
            f"(N, {image[0]}, {image[1]}, {image[2]}) or (N, {image[1]}, {image[2]}, {image[0]}) first"
        )
    layout = hint or _image_layout(shape, source, target)
    c, h, w = _source_image(shape, layout)
    notes = [] if layout == "chw" else ["transposed HWC -> CHW" if layout == "hwc" else "one channel added"]
    notes += _channel_note(c, image[0])
    if (h, w) != image[1:]:
        notes.append(_size_note(h, w, image[1], image[2]))
    return layout, (c, h, w), notes


def _size_note(h: int, w: int, height: int, width: int) -> str:
    new_h, new_w = resized_size(h, w, height, width)
    if (new_h, new_w) == (h, w):
        return f"centre-cropped {h}x{w} to {height}x{width}"
    if (new_h, new_w) == (height, width):
        return f"resized {h}x{w} -> {height}x{width} (bilinear)"
    return f"resized {h}x{w} -> {new_h}x{new_w} (bilinear) and centre-cropped to {height}x{width}"


def _flat_layout(
    shape: tuple[int, ...], target: tuple[int, ...], numel: int, domain: DataDomain, source: str
) -> tuple[str, None, list[str]]:
    """Rule 3 for a model that takes no image: a one-channel image flattened row-major."""
    one_channel = len(_squeezed(shape)) == 2 and len(shape) in (2, 3)
    if numel == domain.numel and len(_squeezed(target)) <= 1 and one_channel:
        return "reshape", None, [f"flattened row-major: {shape} -> {target} (one channel)"]
    if numel == domain.numel:
        raise DataError(
            f"{source} has samples of shape {shape}, but the model takes {target}; the values "
            "would have to be reshaped in memory order, which scrambles them unless the layouts "
            f"agree: reshape the array to (N, {', '.join(map(str, target))}) yourself"
        )
    raise DataError(
        f"{source} has samples of shape {shape}, but the model takes {target}; expected "
        f"{domain.numel} values per sample (or an image the conversion rules can resize)"
    )


def _image_layout(shape: tuple[int, ...], source: str, target: tuple[int, ...]) -> str:
    if len(shape) == 2:
        return "hw"
    if len(shape) == 3:
        first, last = shape[0] in IMAGE_CHANNELS, shape[2] in IMAGE_CHANNELS
        if first != last:
            return "chw" if first else "hwc"
        if first and last and shape[:1] == target[:1] and shape[2] != target[0]:
            return "chw"
        if first and last and shape[2:] == target[:1] and shape[0] != target[0]:
            return "hwc"
    raise DataError(
        f"{source} has samples of shape {shape}, which is neither the model's {target} nor an "
        "image in CHW, HWC or HW layout that can be told apart; reshape the array to "
        f"(N, {', '.join(map(str, target))}) yourself"
    )


def _source_image(shape: tuple[int, ...], layout: str) -> tuple[int, int, int]:
    if layout == "hw":
        return 1, shape[0], shape[1]
    if layout == "chw":
        return shape[0], shape[1], shape[2]
    return shape[2], shape[0], shape[1]


def _channel_note(c: int, channels: int) -> list[str]:
    notes = ["alpha channel dropped"] if c == 4 else []
    c = 3 if c == 4 else c
    if c == channels:
        return notes
    if c == 1 and channels == 3:
        return [*notes, "grey repeated into 3 channels"]
    if c == 3 and channels == 1:
        return [*notes, "RGB to grey (ITU-R 601-2 luma)"]
    raise DataError(f"images of {c} channels cannot feed a model of {channels} channels")


def _in(low: float, high: float, a: float, b: float) -> bool:
    tol = _TOL * (b - a)
    return low >= a - tol and high <= b + tol


def _scale(scan: ValueScan, domain: DataDomain, source: str, ood: bool) -> tuple[tuple[str, float, float], list[str]]:
    """The value rule for ``scan`` (module docstring, "Values")."""
    lo, hi, span = domain.low, domain.high, f"[{domain.low:g}, {domain.high:g}]"
    seen = f"values in [{scan.low:.4g}, {scan.high:.4g}]"
    if domain.assumed_range:
        return ("as-is", 0.0, 0.0), []
    holds_bytes = lo <= 0 and hi >= 255
    pixels = scan.uint8 or (
        scan.integral and scan.high > 1 and _in(scan.low, scan.high, 0, 255) and not _in(scan.low, scan.high, lo, hi)
    )
    if pixels and not holds_bytes:
        if domain.levels == 256:
            rule = f"low + w k / 256, the lower edge of level k of 256 in {span}"
        elif domain.levels is None:
            rule = f"low + w k / 255 in {span}"
        else:
            rule = f"k quantized to floor(k {domain.levels} / 256), then low + w k' / {domain.levels} in {span}"
        return ("8bit", 0.0, 255.0), [f"8-bit pixels k = 0..255 -> {rule}"]
    if _in(scan.low, scan.high, lo, hi):
        return ("as-is", 0.0, 0.0), []
    for a, b in () if ood else STANDARD_RANGES:
        if _in(scan.low, scan.high, a, b):
            return ("linear", a, b), [f"{seen}: rescaled from [{a:g}, {b:g}] to the model's range {span}"]
    if ood:
        return ("as-is", 0.0, 0.0), [f"{seen} lie outside the model's range {span}: an OOD set is used as given"]
    raise DataError(
        f"{source} holds {seen}, outside the model's range {span}, and no standard range "
        "([0, 1], [-0.5, 0.5], [-1, 1], [0, 255]) holds them to rescale from; rescale the data, "
        "or set --range LOW,HIGH if the model's range is wrong"
    )


def plan_conversion(
    shape: tuple[int, ...],
    scan: ValueScan,
    domain: DataDomain,
    source: str,
    *,
    ood: bool,
    layout: str | None = None,
) -> Conversion:
    """The conversion of samples of ``shape`` whose values are ``scan`` to ``domain``.

    Args:
        shape: one sample's shape as stored.
        scan: the dtype and extremes of the samples that will be used.
        domain: the model's data domain.
        source: how errors name the set.
        ood: an OOD set (values outside every known range are used as given, not refused).
        layout: ``"chw"`` / ``"hwc"`` when the file format fixes the layout.

    Raises:
        DataError: one line saying what cannot be converted and what to do.
    """
    kind, image, notes = _layout(tuple(int(s) for s in shape), domain, source, layout)
    scale, value_notes = _scale(scan, domain, source, ood)
    remark = (
        f"values in [{scan.low:.4g}, {scan.high:.4g}] used as given: the model declares no data range to check them against"
        if domain.assumed_range
        else ""
    )
    return Conversion(domain, kind, image, scale, tuple(notes + value_notes), remark)
