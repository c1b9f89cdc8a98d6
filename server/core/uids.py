"""UID syntax (PS3.5 9.1): digits and dots, at most 64 characters, no empty or 0-led component."""

from __future__ import annotations

import re

from server.errors import InvalidUID

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
# Real-world UIDs sometimes carry leading zeros in a component; tolerate those
# on input (they are stored as received) but never anything but digits and dots.
_LENIENT_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def is_valid_uid(value: str) -> bool:
    """PS3.5 9.1 strict check."""
    return len(value) <= 64 and bool(_UID.match(value))


def check_uid(value: str, what: str = "UID") -> str:
    """Validate a UID taken from a URL path or query; raise InvalidUID otherwise.

    Leading zeros are tolerated (seen in real data); anything that is not digits
    and dots, or longer than 64 characters, is refused. This keeps path traversal
    and injection out of every storage and index call.
    """
    if not value or len(value) > 64 or not _LENIENT_UID.match(value):
        shown = value if len(value) <= 80 else value[:80] + "..."
        raise InvalidUID(f"{what} {shown!r} is not a valid DICOM UID")
    return value
