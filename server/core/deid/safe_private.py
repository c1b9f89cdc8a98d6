"""The Retain Safe Private safe-list this gateway ships (PS3.15 E.3.10).

Private attributes kept under Retain Safe Private: numeric acquisition/scaling values
needed to interpret the pixels (diffusion b-values and directions, vendor rescale), keyed
by (private creator, group, element byte within the block). Names and VRs agree with
pydicom's private dictionary; only numeric VRs are listed, so no free text or date can
ride along. Every other private element, and every creator without a kept element, is
removed; in ``eucaim`` exactly the private elements LETHE's script keeps are kept.
"""

from __future__ import annotations

SAFE_PRIVATE: frozenset[tuple[str, int, int]] = frozenset(
    {
        ("SIEMENS MR HEADER", 0x0019, 0x0C),  # B_value (IS)
        ("SIEMENS MR HEADER", 0x0019, 0x0D),  # DiffusionDirectionality (CS, coded)
        ("SIEMENS MR HEADER", 0x0019, 0x0E),  # DiffusionGradientDirection (FD)
        ("SIEMENS MR HEADER", 0x0019, 0x27),  # B_matrix (FD)
        ("GEMS_PARM_01", 0x0043, 0x30),  # Vas collapse flag (SS)
        ("GEMS_PARM_01", 0x0043, 0x39),  # Slop_int_6 ... slop_int_9 (IS)
        ("Philips MR Imaging DD 001", 0x2005, 0x0D),  # scale intercept (FL)
        ("Philips MR Imaging DD 001", 0x2005, 0x0E),  # scale slope (FL)
        ("GEMS_RELA_01", 0x0021, 0x5A),  # Diffusion direction (SL)
        ("MMCPrivate", 0x0029, 0x30),  # DiffusionBValue (FD)
    }
)


def is_safe(creator: str | None, tag: int) -> bool:
    """Whether private ``tag`` under ``creator`` is on the safe-list."""
    if creator is None:
        return False
    return (creator.strip(), tag >> 16, tag & 0xFF) in SAFE_PRIVATE
