"""The File Meta Information a received C-STORE is spooled with is pynetdicom's, byte for byte."""

from __future__ import annotations

import pytest
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from server.dimse.store import file_meta


@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "transfer_syntax"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1"),  # odd, even lengths
        ("1.2.840.10008.5.1.4.1.1.4", "1.2.34.5", "1.2.840.10008.1.2"),
        ("1.2.840.10008.5.1.4.1.1.7", "2.25.1234567890123456789", "1.2.840.10008.1.2.4.201"),
    ],
)
def test_direct_file_meta_equals_pynetdicoms_encoding(
    sop_class: str, sop_instance: str, transfer_syntax: str
) -> None:
    expected = encode_file_meta(
        create_file_meta(
            sop_class_uid=sop_class, sop_instance_uid=sop_instance, transfer_syntax=transfer_syntax
        )
    )
    assert file_meta(sop_class, sop_instance, transfer_syntax) == expected
