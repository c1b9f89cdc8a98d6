"""Which instances may carry burned-in identifying text (checked before anything else).

Suspect: BurnedInAnnotation (0028,0301) is YES; or it is missing on a modality or SOP
class that usually carries burned-in text: ultrasound, secondary capture (all SC
classes), external-camera photography and endoscopy (XC, ES, GM, SM, OP), document
types (encapsulated PDF/CDA/STL/OBJ/MTL), video classes. BurnedInAnnotation NO is taken
at its word. This gateway has no dependable OCR redaction step, so ``clean`` is refused
with a clear message instead of being pretended.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from server.core.deid.policy import BurnedIn, BurnedInSuspected, DeidPolicy, PolicyError

SUSPECT_MODALITIES = {"US", "IVUS", "XC", "ES", "GM", "SM", "OP", "DOC", "OT", "VL"}
SUSPECT_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture (and its multi-frame variants)
    "1.2.840.10008.5.1.4.1.1.6.",  # Ultrasound Image / Multi-frame
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame (retired)
    "1.2.840.10008.5.1.4.1.1.104.",  # Encapsulated PDF / CDA / STL / OBJ / MTL
    "1.2.840.10008.5.1.4.1.1.77.1.",  # VL endoscopic/microscopic/photographic/video
)
NO_OCR = (
    "burned-in text cleaning (OCR) is not available in this gateway; "
    "choose the refuse or quarantine burned-in policy"
)


def suspicion(ds: Dataset) -> str | None:
    """Why ``ds`` may carry burned-in text, or None."""
    flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag == "YES":
        return "BurnedInAnnotation is YES"
    if flag == "NO":
        return None
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in SUSPECT_MODALITIES:
        return f"BurnedInAnnotation missing on modality {modality}"
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class.startswith(SUSPECT_SOP_PREFIXES):
        return f"BurnedInAnnotation missing on SOP class {sop_class}"
    return None


def check(ds: Dataset, policy: DeidPolicy) -> None:
    """Raise BurnedInSuspected (refuse/quarantine) or PolicyError (clean) for suspects."""
    reason = suspicion(ds)
    if reason is None:
        return
    if policy.burned_in is BurnedIn.clean:
        raise PolicyError(f"{reason}: {NO_OCR}")
    raise BurnedInSuspected(f"{reason}: the instance may carry burned-in identifying text")
