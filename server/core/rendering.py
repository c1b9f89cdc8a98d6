"""Rendered resources (PS3.18 8.3.5, 10.4): one frame as a consumer-ready JPEG/PNG/GIF.

Pipeline for grayscale frames (PS3.4 N.2): Modality LUT (Rescale Slope and
Intercept, or the Modality LUT Sequence), then VOI: the ``window`` query
parameter, else the file's first Window Center/Width (per-frame functional
groups first), else its VOI LUT Sequence, else the frame's min/max; MONOCHROME1
is inverted. Colour frames are converted to RGB (YCbCr and palette colour) and
reduced to 8 bits; windowing does not apply to them. The ``viewport`` parameter
optionally crops a source region, then scales the image, preserving its aspect
ratio, to fit inside ``vw x vh`` (up or down). Pixel aspect ratio is ignored.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from PIL import Image, ImageOps
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

from server.core.decoded_size import check_frame_decodable
from server.core.limits import PixelLimits
from server.core.pixels import PixelIndex, PixelIndexError, decode_frame_array, index_pixel_data
from server.errors import BadRequest, NotAcceptable

MEDIA_TYPES: dict[str, str] = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}
MAX_VIEWPORT = 4096  # largest vw/vh accepted: bounds the work a request can cause
DEFAULT_QUALITY = 90
_FUNCTIONS = {
    "linear": "linear",
    "linear-exact": "linear-exact",
    "linear_exact": "linear-exact",
    "sigmoid": "sigmoid",
}

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RenderParams:
    """Parsed rendering query parameters (PS3.18 Table 8.3.5-1)."""

    media_type: str
    window: tuple[float, float, str] | None = None  # center, width, function
    viewport: tuple[int, int] | None = None  # vw, vh
    quality: int | None = None
    region: tuple[int, int, int | None, int | None] | None = None  # sx, sy, sw, sh


def parse_render_params(query: Mapping[str, str], media_type: str) -> RenderParams:
    """PS3.18 8.3.5.1: parse ``window``, ``viewport`` and ``quality``; BadRequest on junk.

    ``media_type`` must be one of MEDIA_TYPES, otherwise NotAcceptable. Other
    query parameters are left to the caller.
    """
    media = media_type.split(";")[0].strip().lower()
    if media not in MEDIA_TYPES:
        raise NotAcceptable(f"rendered media type {media_type!r} is not supported")
    window = _parse_window(query["window"]) if query.get("window") is not None else None
    viewport, region = None, None
    if query.get("viewport") is not None:
        viewport, region = _parse_viewport(query["viewport"])
    quality = _parse_quality(query["quality"]) if query.get("quality") is not None else None
    return RenderParams(media, window, viewport, quality, region)


def _parse_window(value: str) -> tuple[float, float, str]:
    """PS3.18 8.3.5.1.4: ``window=center,width[,function]`` (function defaults to linear)."""
    parts = [p.strip() for p in value.split(",")]
    if len(parts) not in (2, 3):
        raise BadRequest(f"window must be 'center,width,function', got {value!r}")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise BadRequest(f"window center and width must be numbers, got {value!r}") from None
    function = _FUNCTIONS.get(parts[2].lower() if len(parts) == 3 else "linear")
    if function is None:
        raise BadRequest(f"window function must be linear, linear-exact or sigmoid: {value!r}")
    if not (math.isfinite(center) and math.isfinite(width)):
        raise BadRequest(f"window center and width must be finite, got {value!r}")
    if width <= 0 or (function == "linear" and width < 1):
        raise BadRequest(f"window width {width:g} is too small for the {function} function")
    return center, width, function


def _parse_int(text: str, what: str, low: int, high: int) -> int:
    try:
        number = int(text)
    except ValueError:
        raise BadRequest(f"{what} must be an integer, got {text!r}") from None
    if not low <= number <= high:
        raise BadRequest(f"{what} must be between {low} and {high}, got {number}")
    return number


def _parse_viewport(
    value: str,
) -> tuple[tuple[int, int], tuple[int, int, int | None, int | None] | None]:
    """PS3.18 8.3.5.1.3: ``viewport=vw,vh`` or ``vw,vh,sx,sy,sw,sh`` (sx..sh may be empty)."""
    parts = [p.strip() for p in value.split(",")]
    if len(parts) not in (2, 6):
        raise BadRequest(f"viewport must be 'vw,vh' or 'vw,vh,sx,sy,sw,sh', got {value!r}")
    vw = _parse_int(parts[0], "viewport width", 1, MAX_VIEWPORT)
    vh = _parse_int(parts[1], "viewport height", 1, MAX_VIEWPORT)
    if len(parts) == 2:
        return (vw, vh), None
    big = 1 << 31
    sx = _parse_int(parts[2], "viewport sx", 0, big) if parts[2] else 0
    sy = _parse_int(parts[3], "viewport sy", 0, big) if parts[3] else 0
    sw = _parse_int(parts[4], "viewport sw", -big, big) if parts[4] else None
    sh = _parse_int(parts[5], "viewport sh", -big, big) if parts[5] else None
    if sw == 0 or sh == 0:
        raise BadRequest("viewport sw and sh must not be 0")
    return (vw, vh), (sx, sy, sw, sh)


def _parse_quality(value: str) -> int:
    """PS3.18 8.3.5.1.2: ``quality`` is an integer from 1 to 100."""
    return _parse_int(value.strip(), "quality", 1, 100)


def render_frame(
    path: Path,
    frame: int,
    params: RenderParams,
    limits: PixelLimits | None = None,
    index: PixelIndex | None = None,
) -> bytes:
    """PS3.18 10.4.1.1.3 / 8.3.5: frame ``frame`` (1-based) of the file rendered to an image.

    Only that frame is decoded. NotFound for a frame out of range, NotAcceptable when
    the instance has no decodable pixel data, BadRequest for a region outside the image.
    """
    if params.media_type not in MEDIA_TYPES:
        raise NotAcceptable(f"rendered media type {params.media_type!r} is not supported")
    try:
        index = index or index_pixel_data(path)  # the stored index: no second parse
    except PixelIndexError as exc:
        raise NotAcceptable(f"the pixel data cannot be rendered: {exc}") from exc
    if index is None:
        raise NotAcceptable("the instance has no pixel data to render")
    if 1 <= frame <= index.number_of_frames:
        check_frame_decodable(path, index, frame, limits or PixelLimits())
    arr = _decimated(decode_frame_array(path, index, frame, rgb=True), params)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    pixels = _to_display(arr, header, frame, params.window)
    image = Image.fromarray(pixels)
    if params.region is not None:
        image = _crop(image, params.region)
    if params.viewport is not None:
        image = _fit(image, params.viewport)
    return _encode(image, params)


def render_thumbnail(
    path: Path,
    frame: int,
    size: int = 128,
    media_type: str = "image/jpeg",
    limits: PixelLimits | None = None,
    index: PixelIndex | None = None,
) -> bytes:
    """PS3.18 10.4.1.1.5 / 8.3.5: a thumbnail fitting ``size x size`` of one frame."""
    if not 1 <= size <= MAX_VIEWPORT:
        raise BadRequest(f"thumbnail size must be between 1 and {MAX_VIEWPORT}")
    if media_type not in MEDIA_TYPES:
        raise NotAcceptable(f"rendered media type {media_type!r} is not supported")
    params = RenderParams(media_type, viewport=(size, size), quality=80)
    return render_frame(path, frame, params, limits, index)


def _decimated(arr: npt.NDArray[Any], params: RenderParams) -> npt.NDArray[Any]:
    """Keep every n-th pixel when the viewport is at least 4x smaller than the whole frame,
    so the floating-point display pipeline works on about 2x the output size, not the frame."""
    if params.viewport is None or params.region is not None:
        return arr
    step = min(arr.shape[0] // params.viewport[1], arr.shape[1] // params.viewport[0]) // 2
    return arr[::step, ::step] if step >= 2 else arr


def _to_display(
    arr: npt.NDArray[Any], ds: Dataset, frame: int, window: tuple[float, float, str] | None
) -> npt.NDArray[np.uint8]:
    """PS3.4 N.2: 8-bit grayscale (rows, columns) or RGB (rows, columns, 3) pixels."""
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        return _colour_to_8bit(rgb, 8 * rgb.dtype.itemsize)
    if arr.ndim == 3:
        return _colour_to_8bit(arr, int(ds.get("BitsStored") or 8 * arr.dtype.itemsize))
    values = _modality(arr, ds, frame)
    window = window or _file_window(ds, frame)
    if window is not None:
        out = _apply_window(values, *window)
    elif "VOILUTSequence" in ds:
        out = _min_max(np.asarray(apply_voi(np.rint(values).astype(np.int64), ds), dtype=float))
    else:
        out = _min_max(values)
    if photometric == "MONOCHROME1":
        out = 255.0 - out
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _colour_to_8bit(arr: npt.NDArray[Any], bits_stored: int) -> npt.NDArray[np.uint8]:
    """Reduce RGB samples of up to 32 bits to 8 bits by dropping low-order bits."""
    if arr.dtype == np.uint8 or bits_stored <= 8:
        return np.clip(arr, 0, 255).astype(np.uint8)
    shifted = np.asarray(arr, dtype=np.uint64) >> np.uint64(bits_stored - 8)
    return np.clip(shifted, 0, 255).astype(np.uint8)


def _functional_item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """PS3.3 C.7.6.16: the per-frame, else shared, functional group item of ``sequence``."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    groups = [per_frame[frame - 1]] if per_frame is not None and len(per_frame) >= frame else []
    shared = ds.get("SharedFunctionalGroupsSequence")
    groups += [shared[0]] if shared else []
    for group in groups:
        items = group.get(sequence)
        if items:
            return items[0]
    return None


def _first_number(value: Any) -> float | None:
    """First value of a DS/IS element (possibly multi-valued) as a finite float."""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _modality(arr: npt.NDArray[Any], ds: Dataset, frame: int) -> FloatArray:
    """PS3.3 C.11.1: Modality LUT, from functional groups first, then the dataset."""
    source = _functional_item(ds, frame, "PixelValueTransformationSequence") or ds
    if "ModalityLUTSequence" in ds and source is ds:
        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    slope = _first_number(source.get("RescaleSlope"))
    intercept = _first_number(source.get("RescaleIntercept"))
    values = arr.astype(np.float64)
    return values * (1.0 if slope is None else slope) + (intercept or 0.0)


def _file_window(ds: Dataset, frame: int) -> tuple[float, float, str] | None:
    """PS3.3 C.11.2: the first Window Center/Width stored for this frame, if usable."""
    source = _functional_item(ds, frame, "FrameVOILUTSequence") or ds
    center = _first_number(source.get("WindowCenter"))
    width = _first_number(source.get("WindowWidth"))
    function = _FUNCTIONS.get(str(source.get("VOILUTFunction") or "LINEAR").lower(), "linear")
    if center is None or width is None or width <= 0 or (function == "linear" and width < 1):
        return None
    return center, width, function


def _apply_window(values: FloatArray, center: float, width: float, function: str) -> FloatArray:
    """PS3.3 C.11.2.1.2: VOI LUT functions LINEAR, LINEAR_EXACT and SIGMOID to 0..255."""
    if function == "sigmoid":
        return 255.0 / (1.0 + np.exp(np.clip(-4.0 * (values - center) / width, -700, 700)))
    if function == "linear-exact":
        return np.clip(((values - center) / width + 0.5) * 255.0, 0.0, 255.0)
    if width <= 1:
        return np.where(values > center - 0.5, 255.0, 0.0)
    return np.clip(((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0, 0.0, 255.0)


def _min_max(values: FloatArray) -> FloatArray:
    """Window spanning the frame's own range (used when the file has no VOI)."""
    low, high = float(np.min(values)), float(np.max(values))
    if high <= low:
        return np.zeros_like(values)
    return (values - low) * (255.0 / (high - low))


def _crop(image: Image.Image, region: tuple[int, int, int | None, int | None]) -> Image.Image:
    """PS3.18 8.3.5.1.3: keep the source region; a negative sw/sh flips that axis."""
    sx, sy, sw, sh = region
    width = image.width - sx if sw is None else abs(sw)
    height = image.height - sy if sh is None else abs(sh)
    box = (sx, sy, min(sx + width, image.width), min(sy + height, image.height))
    if box[0] >= box[2] or box[1] >= box[3]:
        raise BadRequest(f"viewport region {region} lies outside the {image.size} image")
    image = image.crop(box)
    if sw is not None and sw < 0:
        image = ImageOps.mirror(image)
    if sh is not None and sh < 0:
        image = ImageOps.flip(image)
    return image


def _fit(image: Image.Image, viewport: tuple[int, int]) -> Image.Image:
    """Scale preserving the aspect ratio so the image fits inside ``vw x vh``."""
    vw, vh = viewport
    scale = min(vw / image.width, vh / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def _encode(image: Image.Image, params: RenderParams) -> bytes:
    """Encode with Pillow in the requested media type."""
    out = io.BytesIO()
    fmt = MEDIA_TYPES[params.media_type]
    if fmt == "JPEG":
        image.save(out, fmt, quality=params.quality or DEFAULT_QUALITY)
    else:
        image.save(out, fmt)
    return out.getvalue()
