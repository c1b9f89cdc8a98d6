"""Keep DICOM values out of logs: pydicom quotes element values in its warnings.

pydicom logs (logger ``pydicom``) and warns (``UserWarning`` from its modules) with the
offending value, e.g. ``Invalid value for VR UI: '<value>'``; on an identifying
instance that value is personal data. The gateway reports parse problems itself,
without values, so pydicom's own messages are dropped in every process.
"""

from __future__ import annotations

import logging
import warnings


def silence_value_logging() -> None:
    """Drop pydicom's log records and warnings, and pynetdicom's dumps (all may quote values)."""
    logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)
    # pynetdicom dumps whole identifiers and datasets at debug/info; the DIMSE edge logs
    # its own summary (gateway.dimse).
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
