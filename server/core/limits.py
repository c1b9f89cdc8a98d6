"""Resource limits that bound the work one instance or one request can cause.

Set from ``server.settings`` (``GATEWAY_PIXELS__*`` and ``GATEWAY_STOW__*``) by the
composition root; core functions take them as arguments, never read settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.core.bulkdata import DEFAULT_THRESHOLD
from server.errors import PayloadTooLarge

MAX_SEQUENCE_DEPTH = 64  # deepest sequence nesting accepted (real objects stay below ~10)


@dataclass(frozen=True)
class PixelLimits:
    """Caps on decoded pixel data; None means no cap (maintenance tools re-reading the store)."""

    max_frame_bytes: int | None = None  # one decoded frame
    max_inflated_bytes: int | None = None  # a Deflated Explicit VR Little Endian data set
    max_transcode_bytes: int | None = None  # a whole instance decoded in memory
    inline_binary_max_bytes: int = DEFAULT_THRESHOLD


class TooLarge(PayloadTooLarge):
    """Decoding would exceed a configured limit (413 on retrieval, 0xC000 at ingest)."""


def check_frame(decoded: int, limits: PixelLimits, what: str = "a frame") -> None:
    cap = limits.max_frame_bytes
    if cap is not None and decoded > cap:
        raise TooLarge(
            f"{what} decodes past GATEWAY_PIXELS__MAX_FRAME_BYTES: {decoded} bytes, "
            f"the limit is {cap}"
        )
