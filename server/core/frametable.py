"""Packed frame tables: where each frame of a stored instance lies, for many frames.

A whole-slide image level holds tens of thousands of frames (tiles). Holding its
frame table as a tuple of tuples, or as JSON, costs a parse of every entry on each
request (about 0.7 s for 100,000 frames); :class:`FrameTable` keeps the table as
packed little-endian integers and decodes only the frame asked for, so building it
from its stored bytes is O(1) and looking up one frame is O(1) or one vector sum.

Three layouts, picked by :func:`pack` from the ranges themselves:

* ``regular``: one range per frame, frame ``i`` at ``base + i * stride`` with
  ``length`` bytes (native pixel data whose frames end on a byte boundary);
* ``contiguous``: one range per frame, each range following the previous one
  after ``gap`` bytes (encapsulated fragments, one item per frame, item headers of
  8 bytes in between): the lengths are stored, the offsets are prefix sums;
* ``general``: any number of ranges per frame: per-frame start indices into
  arrays of range offsets and lengths.

Serialised form (:meth:`FrameTable.to_bytes`): one layout byte, a header of
little-endian 64-bit integers, then the arrays.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import Any, overload

import numpy as np
import numpy.typing as npt

Ranges = tuple[tuple[int, int], ...]

_REGULAR, _CONTIGUOUS, _GENERAL = 1, 2, 3
_HEAD = struct.Struct("<BQQQQ")  # layout, frames, base, stride-or-gap, length-or-ranges


class FrameTableError(ValueError):
    """Bytes that are not a serialised :class:`FrameTable`."""


class FrameTable(Sequence[Ranges]):
    """A read-only sequence of per-frame ranges ``((file_offset, length), ...)``."""

    __slots__ = ("_base", "_layout", "_lengths", "_n", "_offsets", "_starts", "_step", "_width")

    def __init__(
        self,
        layout: int,
        n: int,
        base: int = 0,
        step: int = 0,
        width: int = 0,
        lengths: npt.NDArray[Any] | None = None,
        offsets: npt.NDArray[Any] | None = None,
        starts: npt.NDArray[Any] | None = None,
    ) -> None:
        self._layout, self._n, self._base, self._step, self._width = layout, n, base, step, width
        self._lengths, self._offsets, self._starts = lengths, offsets, starts

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Ranges: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Ranges]: ...
    def __getitem__(self, i: int | slice) -> Ranges | Sequence[Ranges]:
        if isinstance(i, slice):
            return tuple(self)[i]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("frame index out of range")
        if self._layout == _REGULAR:
            return ((self._base + i * self._step, self._width),)
        lengths = self._lengths
        assert lengths is not None
        if self._layout == _CONTIGUOUS:
            before = int(lengths[:i].sum(dtype=np.uint64)) if i else 0
            return ((self._base + before + i * self._step, int(lengths[i])),)
        offsets, starts = self._offsets, self._starts
        assert offsets is not None and starts is not None
        a, b = int(starts[i]), int(starts[i + 1])
        return tuple((int(o), int(n)) for o, n in zip(offsets[a:b], lengths[a:b], strict=True))

    def __iter__(self) -> Iterator[Ranges]:
        if self._layout == _REGULAR:
            for i in range(self._n):
                yield ((self._base + i * self._step, self._width),)
            return
        lengths = self._lengths
        assert lengths is not None
        if self._layout == _CONTIGUOUS:
            ends = np.cumsum(lengths, dtype=np.uint64)
            for i in range(self._n):
                length = int(lengths[i])
                yield ((self._base + int(ends[i]) - length + i * self._step, length),)
            return
        offsets, starts = self._offsets, self._starts
        assert offsets is not None and starts is not None
        pairs = list(zip(offsets.tolist(), lengths.tolist(), strict=True))
        bounds = starts.tolist()
        for i in range(self._n):
            yield tuple(pairs[bounds[i] : bounds[i + 1]])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(
            a == tuple(b) for a, b in zip(self, other, strict=True)
        )

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"FrameTable(layout={self._layout}, frames={self._n})"

    def to_bytes(self) -> bytes:
        if self._layout == _REGULAR:
            return _HEAD.pack(_REGULAR, self._n, self._base, self._step, self._width)
        lengths = self._lengths
        assert lengths is not None
        if self._layout == _CONTIGUOUS:
            head = _HEAD.pack(_CONTIGUOUS, self._n, self._base, self._step, 0)
            return head + lengths.astype("<u4").tobytes()
        offsets, starts = self._offsets, self._starts
        assert offsets is not None and starts is not None
        head = _HEAD.pack(_GENERAL, self._n, 0, 0, len(lengths))
        return (
            head
            + starts.astype("<u8").tobytes()
            + offsets.astype("<u8").tobytes()
            + lengths.astype("<u8").tobytes()
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> FrameTable:
        """Inverse of :meth:`to_bytes`, without decoding the entries (views on ``data``)."""
        if len(data) < _HEAD.size:
            raise FrameTableError("frame table is truncated")
        layout, n, base, step, extra = _HEAD.unpack_from(data)
        body = memoryview(data)[_HEAD.size :]
        if layout == _REGULAR and not body:
            return cls(_REGULAR, n, base, step, extra)
        if layout == _CONTIGUOUS and len(body) == 4 * n:
            return cls(_CONTIGUOUS, n, base, step, lengths=np.frombuffer(body, "<u4"))
        if layout == _GENERAL and len(body) == 8 * (n + 1) + 16 * extra:
            starts = np.frombuffer(body, "<u8", n + 1)
            offsets = np.frombuffer(body, "<u8", extra, 8 * (n + 1))
            lengths = np.frombuffer(body, "<u8", extra, 8 * (n + 1) + 8 * extra)
            if starts[0] != 0 or starts[-1] != extra or np.any(starts[1:] < starts[:-1]):
                raise FrameTableError("frame table start indices are out of order")
            return cls(_GENERAL, n, lengths=lengths, offsets=offsets, starts=starts)
        raise FrameTableError(f"not a serialised frame table (layout {layout}, {n} frames)")


def pack(frames: Sequence[Ranges]) -> FrameTable:
    """The most compact layout that holds ``frames`` exactly (see the module docstring)."""
    if isinstance(frames, FrameTable):
        return frames
    n = len(frames)
    singles = n > 0 and all(len(frame) == 1 for frame in frames)
    if singles:
        offsets = [frame[0][0] for frame in frames]
        lengths = [frame[0][1] for frame in frames]
        steps = {b - a for a, b in pairwise(offsets)}
        if len(set(lengths)) == 1 and len(steps) <= 1:
            return FrameTable(_REGULAR, n, offsets[0], steps.pop() if steps else 0, lengths[0])
        gaps = {
            b - (a + length) for a, b, length in zip(offsets, offsets[1:], lengths, strict=False)
        }
        if len(gaps) <= 1 and max(lengths) < 2**32 and min(gaps, default=0) >= 0:
            gap = gaps.pop() if gaps else 0
            return FrameTable(_CONTIGUOUS, n, offsets[0], gap, lengths=np.array(lengths, "<u4"))
    starts = np.zeros(n + 1, "<u8")
    flat = [r for frame in frames for r in frame]
    np.cumsum([len(frame) for frame in frames], out=starts[1:])
    return FrameTable(
        _GENERAL,
        n,
        lengths=np.array([r[1] for r in flat], "<u8"),
        offsets=np.array([r[0] for r in flat], "<u8"),
        starts=starts,
    )
