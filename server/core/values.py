"""Normalised, comparable forms of DICOM values for the index (PS3.5 6.2, PS3.4 C.2.2.2)."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

_DIGITS = re.compile(r"[^0-9]")


def normalize_da(value: str) -> str | None:
    """PS3.5 6.2 DA: 'YYYYMMDD' (the ACR-NEMA 'YYYY.MM.DD' form is accepted)."""
    digits = _DIGITS.sub("", value.strip())
    return digits if len(digits) == 8 else None


def normalize_tm(value: str, *, upper: bool = False) -> str | None:
    """PS3.5 6.2 TM as fixed-width 'HHMMSS.FFFFFF'.

    Missing components are filled with the lowest value, or with the highest
    for the upper bound of a range, so that '-12' matches up to 12:59:59.999999.
    """
    text = value.strip().replace(":", "")
    if not text:
        return None
    main, _, frac = text.partition(".")
    if not main.isdigit() or len(main) not in (2, 4, 6) or (frac and not frac.isdigit()):
        return None
    fill = "595959" if upper else "000000"
    main = main + fill[len(main) :]
    frac = (
        (frac + ("9" if upper and not frac else "0") * 6)[:6]
        if frac
        else ("999999" if upper else "000000")
    )
    return f"{main}.{frac}"


def fold(text: str) -> str:
    """Lower-case and strip accents (NFKD, drop combining marks)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


_NAME_SPLIT = re.compile(r"[\^=\s,]+")


def name_tokens(value: str) -> list[str]:
    """Words of a person name for fuzzy matching: every component of every group, folded."""
    return [t for t in _NAME_SPLIT.split(fold(value)) if t]


def fuzzy_name_column(value: str) -> str:
    """Stored fuzzy form: ' tok1 tok2 ... ' so that LIKE '% prefix%' matches a word prefix."""
    tokens = name_tokens(value)
    return " " + " ".join(tokens) + " " if tokens else ""


def normalize_is(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None
