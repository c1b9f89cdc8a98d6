"""Real VL Whole Slide Microscopy instances, written by wsidicom from a synthetic image.

wsidicom (the maintained WSI DICOM library) does the DICOM side: the tiled
multi-resolution pyramid (``add_missing_levels`` downsamples the base level), the
JPEG tiles, the offset table, the Specimen module. Only the pixels are made here: a
tiled RGB image whose tile (x, y) has colours derived from x and y, so a frame read
from the wrong place shows. Used by tests/api/test_wsi.py and bench/wsi_frames.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import JPEGBaseline8Bit, generate_uid
from wsidicom import WsiDicom
from wsidicom.codec import Encoder
from wsidicom.geometry import Point, Size, SizeMm
from wsidicom.instance import ImageData, WsiInstance
from wsidicom.instance.dataset import ImageType
from wsidicom.metadata import (
    Equipment,
    Image,
    Label,
    Patient,
    Pyramid,
    Series,
    Slide,
    SlideSample,
    Study,
    WsiMetadata,
)
from wsidicom.metadata.schema.dicom.wsi import WsiMetadataDicomSchema
from wsidicom.source import Source

# Identifying values planted in the specimen description (what de-identification must catch).
CONTAINER_ID = "SLIDE-H-4711-B"
SPECIMEN_ID = "SPECIMEN-0815-A"
SPECIMEN_TEXT = "Liver biopsy of Roe^Jane, sent by Dr Kowalski"


class _SyntheticTiles(ImageData):  # type: ignore[misc]
    """A tiled RGB image generated on demand, tile by tile, JPEG baseline encoded."""

    def __init__(self, size: int, tile: int) -> None:
        self._size, self._tile = Size(size, size), Size(tile, tile)
        super().__init__(Encoder.create(JPEGBaseline8Bit, 8, "YBR_FULL_422"))

    transfer_syntax = property(lambda self: JPEGBaseline8Bit)
    image_size = property(lambda self: self._size)
    tile_size = property(lambda self: self._tile)
    pixel_spacing = property(lambda self: SizeMm(0.00025, 0.00025))  # 0.25 um per pixel
    imaged_size = property(lambda self: None)
    samples_per_pixel = property(lambda self: 3)
    bits = property(lambda self: 8)
    photometric_interpretation = property(lambda self: "YBR_FULL_422")
    image_coordinate_system = property(lambda self: None)
    thread_safe = property(lambda self: True)
    lossy_compression = property(lambda self: None)
    transcoder = property(lambda self: None)

    def get_decoded_tile(self, tile_point: Point, z: float, path: str, cache: bool = True) -> Any:
        t = self._tile.width
        tile = np.empty((t, t, 3), np.uint8)
        tile[..., 0] = (tile_point.x * 37) % 256
        tile[..., 1] = (tile_point.y * 53) % 256
        tile[..., 2] = (np.arange(t, dtype=np.uint16) * 255 // max(t - 1, 1))[None, :]
        return tile

    def get_encoded_tile(self, tile: Point, z: float, path: str) -> bytes:
        return bytes(self.encoder.encode(self.get_decoded_tile(tile, z, path)))


class _SyntheticSource(Source):  # type: ignore[misc]
    """One base level; wsidicom's writer makes the lower resolutions."""

    def __init__(self, size: int, tile: int, patient: str) -> None:
        super().__init__()
        sample = SlideSample(
            identifier=SPECIMEN_ID, uid=generate_uid(), detailed_description=SPECIMEN_TEXT
        )
        metadata = WsiMetadata(
            study=Study(uid=generate_uid(), identifier="ACC-WSI-1"),
            series=Series(uid=generate_uid(), number=1),
            patient=Patient(name=patient, identifier="PID-WSI-1"),
            equipment=Equipment(
                manufacturer="Synthetic",
                model_name="Tiles",
                device_serial_number="SN-1",
                software_versions=["1"],
            ),
            slide=Slide(identifier=CONTAINER_ID, samples=[sample]),
            pyramid=Pyramid(image=Image(), optical_paths=[], uid=generate_uid()),
            label=Label(),
            frame_of_reference_uid=generate_uid(),
            dimension_organization_uids=[generate_uid()],
        )
        base = WsiMetadataDicomSchema().dump(metadata, ImageType.VOLUME, True)
        self._level = WsiInstance.create_instance(
            _SyntheticTiles(size, tile), base, ImageType.VOLUME, 0
        )

    base_dataset = property(lambda self: self._level.dataset)
    level_instances = property(lambda self: [self._level])
    label_instances = property(lambda self: [])
    overview_instances = property(lambda self: [])
    thumbnail_instances = property(lambda self: [])
    annotation_instances = property(lambda self: [])

    def close(self) -> None:
        pass


def write_slide(
    folder: Path,
    size: int,
    tile: int,
    *,
    levels: bool = True,
    offset_table: str = "bot",
    patient: str = "Roe^Jane",
) -> list[Path]:
    """A ``size`` x ``size`` slide in ``tile`` x ``tile`` JPEG frames, as Part-10 files in
    ``folder``: the base level, and with ``levels`` every lower resolution down to one tile.
    ``offset_table`` is wsidicom's choice: ``bot``, ``eot`` or ``empty``."""
    folder.mkdir(parents=True, exist_ok=True)
    with WsiDicom(_SyntheticSource(size, tile, patient)) as wsi:
        files: Sequence[Any] = wsi.save(
            folder,
            add_missing_levels=levels,
            include_labels=False,
            include_overviews=False,
            offset_table=offset_table,
            workers=1,
            uid_generator=generate_uid,
        )
    return [Path(str(f)) for f in files]


def encoded_tiles(path: Path) -> dict[tuple[int, int], bytes]:
    """Every tile of the one level in ``path``, as wsidicom reads it back: (x, y) -> bytes."""
    out: dict[tuple[int, int], bytes] = {}
    with WsiDicom.open(path) as wsi:
        level = wsi.levels.base_level
        columns, rows = level.tiled_size.width, level.tiled_size.height
        for y in range(rows):
            for x in range(columns):
                out[(x, y)] = bytes(wsi.read_encoded_tile(level.level, (x, y)))
    return out


__all__ = ["CONTAINER_ID", "SPECIMEN_ID", "SPECIMEN_TEXT", "encoded_tiles", "write_slide"]
