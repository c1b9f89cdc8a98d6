"""Packed frame tables (server/core/frametable.py): every layout reads back what was packed."""

from __future__ import annotations

import random

import pytest

from server.core.frametable import FrameTable, FrameTableError, Ranges, pack

REGULAR = tuple(((1000 + i * 512, 512),) for i in range(300))
CONTIGUOUS = tuple(((2000 + i * 8 + i * (i + 1) // 2, i + 1),) for i in range(300))
GENERAL = tuple(tuple((5000 + 100 * i + 10 * j, 7) for j in range(1 + i % 3)) for i in range(300))
BITS = tuple(((10, 2),) for _ in range(3))  # 1-bit frames sharing bytes: same range, step 0
IRREGULAR = (((100, 5),), ((50, 5),), ((300, 9),))  # out of order: no shortcut applies


@pytest.mark.parametrize("frames", [REGULAR, CONTIGUOUS, GENERAL, BITS, IRREGULAR, ()])
def test_a_packed_table_reads_back_every_frame_after_serialisation(
    frames: tuple[Ranges, ...],
) -> None:
    table = FrameTable.from_bytes(pack(frames).to_bytes())
    assert len(table) == len(frames)
    assert table == frames and list(table) == list(frames)
    rng = random.Random(7)
    for i in rng.sample(range(len(frames)), min(len(frames), 50)):
        assert table[i] == frames[i]
        assert table[i - len(frames)] == frames[i]
    with pytest.raises(IndexError):
        table[len(frames)]


def test_the_common_layouts_cost_a_few_bytes_a_frame() -> None:
    assert len(pack(REGULAR).to_bytes()) < 64  # geometry only
    assert len(pack(CONTIGUOUS).to_bytes()) < 64 + 4 * len(CONTIGUOUS)  # one length a frame


@pytest.mark.parametrize(
    "junk", [b"", b"\x01" * 10, pack(CONTIGUOUS).to_bytes()[:-1], b"\x09" + bytes(32)]
)
def test_bytes_that_are_not_a_table_are_refused(junk: bytes) -> None:
    with pytest.raises(FrameTableError):
        FrameTable.from_bytes(junk)


def test_general_start_indices_out_of_order_are_refused() -> None:
    data = bytearray(pack(GENERAL).to_bytes())
    data[33 + 8 : 33 + 16] = (10**6).to_bytes(8, "little")  # starts[1] far past the ranges
    with pytest.raises(FrameTableError):
        FrameTable.from_bytes(bytes(data))
