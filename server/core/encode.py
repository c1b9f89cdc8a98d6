"""Pixel encoders for transcoding on retrieval (PS3.18 8.7.3.5, PS3.5 8.2 and A.4).

One library, imagecodecs, encodes every target: JPEG baseline (libjpeg-turbo),
JPEG lossless SV1 (libjpeg-turbo's lossless mode, predictor 1), JPEG-LS lossless
(CharLS), JPEG 2000 lossless (OpenJPEG, reversible 5/3 wavelet, raw codestream) and
HTJ2K lossless (OpenJPH). Decoding stays with pydicom's plugins.

What can be encoded is decided from the stored geometry before a byte is sent
(:func:`why_not`), so a request is refused with 406 rather than answered in a
different syntax. JPEG baseline takes 8-bit samples only (no silent windowing of
12/16-bit data); the lossless targets take 8 and 16-bit integer samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
BASELINE_QUALITY = 90


@dataclass(frozen=True)
class Target:
    uid: str
    name: str
    media_type: str  # PS3.18 Table 8.7.3-2: the single-frame media type of its frames
    lossy: bool
    encode: Callable[[npt.NDArray[Any], int, bool], bytes]  # (frame, bits stored, signed)


def _codecs() -> Any:
    import imagecodecs  # imported on first use: start-up stays fast

    return imagecodecs


def _unsigned(frame: npt.NDArray[Any], bits: int) -> npt.NDArray[Any]:
    """PS3.5 8.1.1: the stored bit pattern of signed samples, as unsigned (JPEG and JPEG-LS
    code unsigned samples; decoders sign-extend from Pixel Representation)."""
    if frame.dtype.kind != "i":
        return frame
    unsigned = frame.view(frame.dtype.str.replace("i", "u"))
    return unsigned & np.array((1 << bits) - 1, dtype=unsigned.dtype)


def _baseline(frame: npt.NDArray[Any], bits: int, signed: bool) -> bytes:
    codecs = _codecs()
    if frame.ndim == 3:  # RGB in, YCbCr 4:2:2 out (PS3.5 8.2.1: YBR_FULL_422)
        return bytes(codecs.jpeg8_encode(frame, level=BASELINE_QUALITY, subsampling="422"))
    return bytes(codecs.jpeg8_encode(frame, level=BASELINE_QUALITY))


def _sv1(frame: npt.NDArray[Any], bits: int, signed: bool) -> bytes:
    data = _unsigned(frame, bits)
    return bytes(_codecs().jpeg8_encode(data, lossless=True, predictor=1, bitspersample=bits,
                                        colorspace="RGB" if frame.ndim == 3 else None,
                                        outcolorspace="RGB" if frame.ndim == 3 else None))  # fmt: skip


def _jpegls(frame: npt.NDArray[Any], bits: int, signed: bool) -> bytes:
    return bytes(_codecs().jpegls_encode(_unsigned(frame, bits), level=0))


def _j2k(frame: npt.NDArray[Any], bits: int, signed: bool) -> bytes:
    return bytes(_codecs().jpeg2k_encode(frame, level=0, codecformat="J2K", reversible=True,
                                         bitspersample=bits, mct=False))  # fmt: skip


def _htj2k(frame: npt.NDArray[Any], bits: int, signed: bool) -> bytes:
    return bytes(_codecs().htj2k_encode(frame, level=0, reversible=True))


TARGETS: dict[str, Target] = {
    t.uid: t
    for t in (
        Target(JPEG_BASELINE, "JPEG Baseline (Process 1)", "image/jpeg", True, _baseline),
        Target(JPEG_LOSSLESS_SV1, "JPEG Lossless SV1", "image/jpeg", False, _sv1),
        Target(JPEG_LS_LOSSLESS, "JPEG-LS Lossless", "image/jls", False, _jpegls),
        Target(JPEG_2000_LOSSLESS, "JPEG 2000 Lossless", "image/jp2", False, _j2k),
        Target(HTJ2K_LOSSLESS, "HTJ2K Lossless", "image/jphc", False, _htj2k),
    )
}
# PS3.18 Table 8.7.3-2: the transfer syntax a frame media type means without a parameter
DEFAULT_FOR_MEDIA = {
    "image/jpeg": JPEG_BASELINE,
    "image/jls": JPEG_LS_LOSSLESS,
    "image/jp2": JPEG_2000_LOSSLESS,
    "image/jphc": HTJ2K_LOSSLESS,
}


def why_not(uid: str, bits_allocated: int, bits_stored: int, samples: int) -> str | None:
    """None if frames of this geometry can be encoded in ``uid``, else the reason."""
    target = TARGETS.get(uid)
    if target is None:
        return f"{uid} is not a transfer syntax this gateway encodes"
    if samples not in (1, 3):
        return f"{samples} samples per pixel cannot be encoded"
    if uid == JPEG_BASELINE and bits_allocated != 8:
        return (
            f"JPEG baseline takes 8-bit samples; this instance has {bits_stored} bits stored "
            "(ask for a lossless syntax)"
        )
    if bits_allocated not in (8, 16) or not 2 <= bits_stored <= 16:
        return f"{bits_allocated}-bit samples cannot be encoded in {target.name}"
    return None


def encode_frame(uid: str, frame: npt.NDArray[Any], bits_stored: int, signed: bool) -> bytes:
    """One decoded frame (rows, columns[, 3]) as a ``uid`` codestream; colour must be RGB."""
    data = frame.astype(frame.dtype.newbyteorder("="), copy=False)
    return TARGETS[uid].encode(np.ascontiguousarray(data), bits_stored, signed)


def supported_list() -> str:
    return ", ".join(f"{t.uid} ({t.name})" for t in TARGETS.values())
