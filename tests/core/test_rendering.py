"""Rendered frames (PS3.18 8.3.5) from pydicom's test files, decoded back with Pillow."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from server.core.rendering import (
    RenderParams,
    parse_render_params,
    render_frame,
    render_thumbnail,
)
from server.errors import BadRequest, NotAcceptable, NotFound

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CT = Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
MONOCHROME1 = Path(get_testdata_file("6154"))  # type: ignore[arg-type]
RTDOSE = Path(get_testdata_file("rtdose.dcm"))  # type: ignore[arg-type]

# Real images of every kind: native/RLE/JPEG/JPEG-LS/J2K, grey/RGB/YBR/palette, BE, deflated.
RENDERABLE = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEG2000.dcm",
    "JPGExtended.dcm",
    "693_J2KI.dcm",
    "SC_rgb_rle.dcm",
    "SC_rgb_rle_16bit.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_dcmtk_+eb+cy+np.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "ExplVR_BigEnd.dcm",
    "examples_ybr_color.dcm",
    "examples_palette.dcm",
    "examples_jpeg2k.dcm",
    "image_dfl.dcm",
    "liver_1frame.dcm",
    "liver_expb_1frame.dcm",
    "rtdose_rle.dcm",
    "6154",
]


def _path(name: str) -> Path:
    found = get_testdata_file(name)
    assert found is not None, name
    return Path(found)


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _render(path: Path, frame: int = 1, **query: str) -> np.ndarray:
    media = query.pop("media", "image/png")
    return _pixels(render_frame(path, frame, parse_render_params(query, media)))


@pytest.mark.parametrize("name", RENDERABLE)
@pytest.mark.parametrize("media", ["image/png", "image/jpeg"])
def test_renders_real_images(name: str, media: str) -> None:
    path = _path(name)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    pixels = _render(path, media=media)
    assert pixels.shape[:2] == (ds.Rows, ds.Columns)
    assert pixels.dtype == np.uint8
    assert int(pixels.max()) > int(pixels.min())
    if int(ds.get("SamplesPerPixel", 1)) == 3 or ds.PhotometricInterpretation == "PALETTE COLOR":
        assert pixels.ndim == 3 and pixels.shape[2] == 3


def test_jpeg_output_is_jpeg() -> None:
    data = render_frame(CT, 1, RenderParams("image/jpeg"))
    assert data[:2] == b"\xff\xd8"
    assert Image.open(io.BytesIO(data)).format == "JPEG"


def test_gif_output() -> None:
    assert Image.open(io.BytesIO(render_frame(CT, 1, RenderParams("image/gif")))).format == "GIF"


def test_quality_changes_jpeg_size() -> None:
    low = render_frame(CT, 1, parse_render_params({"quality": "5"}, "image/jpeg"))
    high = render_frame(CT, 1, parse_render_params({"quality": "100"}, "image/jpeg"))
    assert len(low) < len(high)


@pytest.mark.parametrize(
    ("name", "viewport", "size"),
    [
        ("CT_small.dcm", "64,32", (32, 32)),  # 128x128 into 64x32
        ("CT_small.dcm", "300,400", (300, 300)),  # scaled up to fit
        ("JPEG2000.dcm", "100,100", (25, 100)),  # 256 wide x 1024 high
        ("examples_ybr_color.dcm", "160,500", (160, 120)),  # 320x240
    ],
)
def test_viewport_fits_preserving_aspect(name: str, viewport: str, size: tuple[int, int]) -> None:
    pixels = _render(_path(name), viewport=viewport)
    assert (pixels.shape[1], pixels.shape[0]) == size


def test_viewport_source_region_and_flip() -> None:
    region = _render(CT, viewport="32,32,10,20,32,32")
    full = _render(CT)
    assert region.shape == (32, 32)
    np.testing.assert_array_equal(region, full[20:52, 10:42])
    flipped = _render(CT, viewport="32,32,10,20,-32,32")
    np.testing.assert_array_equal(flipped, full[20:52, 10:42][:, ::-1])
    with pytest.raises(BadRequest):
        _render(CT, viewport="32,32,500,500,10,10")


def test_thumbnail() -> None:
    image = Image.open(io.BytesIO(render_thumbnail(_path("JPEG2000.dcm"), 1)))
    assert image.format == "JPEG" and image.size == (32, 128)
    small = Image.open(io.BytesIO(render_thumbnail(CT, 1, size=48, media_type="image/png")))
    assert small.format == "PNG" and small.size == (48, 48)
    with pytest.raises(BadRequest):
        render_thumbnail(CT, 1, size=0)


def test_window_changes_output() -> None:
    narrow = _render(CT, window="40,400,linear")
    wide = _render(CT, window="40,4000,linear")
    assert not np.array_equal(narrow, wide)
    sigmoid = _render(CT, window="40,400,sigmoid")
    exact = _render(CT, window="40,400,linear-exact")
    assert not np.array_equal(narrow, sigmoid)
    assert int(np.abs(narrow.astype(int) - exact.astype(int)).max()) <= 2
    assert not np.array_equal(_render(CT), narrow)  # CT_small has no window: min/max


def test_file_window_is_default() -> None:
    mr = _path("MR_small.dcm")  # Window Center 600, Width 1600
    np.testing.assert_array_equal(_render(mr), _render(mr, window="600,1600,LINEAR"))
    assert not np.array_equal(_render(mr), _render(mr, window="300,200"))


def test_functional_group_window(tmp_path: Path) -> None:
    ds = pydicom.dcmread(CT)
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = 40, 400
    group = Dataset()
    group.FrameVOILUTSequence = [voi]
    ds.SharedFunctionalGroupsSequence = [group]
    path = tmp_path / "ct_fg.dcm"
    ds.save_as(path)
    np.testing.assert_array_equal(_render(path), _render(CT, window="40,400"))


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    ds = pydicom.dcmread(MONOCHROME1)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    ds.PhotometricInterpretation = "MONOCHROME2"
    as_mono2 = tmp_path / "mono2.dcm"
    ds.save_as(as_mono2)
    for window in ("1600,2800", "1200,600,sigmoid"):
        mono1 = _render(MONOCHROME1, window=window).astype(int)
        mono2 = _render(as_mono2, window=window).astype(int)
        np.testing.assert_array_equal(mono1, 255 - mono2)
        assert mono1.max() > mono1.min()


def test_multiframe_frames_differ() -> None:
    for name in ("examples_ybr_color.dcm", "rtdose.dcm", "rtdose_rle.dcm"):
        path = _path(name)
        first, fifth = _render(path, 1), _render(path, 5)
        assert first.shape == fifth.shape
        assert not np.array_equal(first, fifth), name


def test_frame_out_of_range() -> None:
    for frame in (0, 2):
        with pytest.raises(NotFound):
            render_frame(CT, frame, RenderParams("image/png"))
    with pytest.raises(NotFound):
        render_frame(RTDOSE, 16, RenderParams("image/jpeg"))


def test_no_pixel_data_or_undecodable() -> None:
    with pytest.raises(NotAcceptable):
        render_frame(_path("rtplan.dcm"), 1, RenderParams("image/png"))
    with pytest.raises(NotAcceptable):
        render_frame(_path("JPEG-lossy.dcm"), 1, RenderParams("image/png"))
    with pytest.raises(NotAcceptable):
        render_frame(_path("MR_truncated.dcm"), 1, RenderParams("image/png"))


def test_parse_render_params() -> None:
    params = parse_render_params(
        {"window": "40,400,LINEAR_EXACT", "viewport": "512,256", "quality": "80"}, "image/jpeg"
    )
    assert params == RenderParams("image/jpeg", (40.0, 400.0, "linear-exact"), (512, 256), 80)
    assert parse_render_params({}, "image/png") == RenderParams("image/png")
    region = parse_render_params({"viewport": "10,20,1,2,,"}, "image/png")
    assert region.viewport == (10, 20) and region.region == (1, 2, None, None)
    window = parse_render_params({"window": "-5.5,1e3"}, "image/png").window
    assert window == (-5.5, 1000.0, "linear")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("window", "abc"),
        ("window", "40"),
        ("window", "40,400,cubic"),
        ("window", "40,400,linear,4"),
        ("window", "40,0"),
        ("window", "40,0.5,linear"),
        ("window", "nan,400"),
        ("window", "40,inf"),
        ("viewport", "0,10"),
        ("viewport", "a,b"),
        ("viewport", "1,2,3"),
        ("viewport", "100000,100"),
        ("viewport", "10,10,0,0,0,5"),
        ("viewport", "10,10,-1,0,5,5"),
        ("quality", "0"),
        ("quality", "101"),
        ("quality", "high"),
    ],
)
def test_junk_parameters_are_bad_requests(key: str, value: str) -> None:
    with pytest.raises(BadRequest):
        parse_render_params({key: value}, "image/jpeg")


def test_unsupported_media_type() -> None:
    with pytest.raises(NotAcceptable):
        parse_render_params({}, "image/tiff")
    with pytest.raises(NotAcceptable):
        render_frame(CT, 1, RenderParams("application/dicom"))
