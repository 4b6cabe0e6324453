"""Tests for jaxstyle.images: loading every kind of file a user may pass, atomic saving, and the
colour-preservation helpers.

Every image is made here with Pillow in a temp dir; nothing is read from outside the test.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxstyle import images as imlib
from jaxstyle.images import ImageError

U8 = 1.0 / 255.0  # one 8-bit step


def rgb_u8(h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth-ish random uint8 RGB image (smooth so JPEG round trips stay close)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], axis=-1)
    return (np.clip(base + rng.uniform(-0.05, 0.05, base.shape), 0, 1) * 255).astype(np.uint8)


def save_pil(path: Path, img: Image.Image, **kw) -> Path:
    img.save(path, **kw)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A ~60-byte PNG that claims ``width`` x ``height`` RGB pixels (decoding it would fail)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )
    return path


def forbid_decoding(monkeypatch) -> list:
    """From now on, fails the test if Pillow starts decoding pixel data (creates a decoder)."""
    calls: list = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("Pillow started decoding the pixel data")

    monkeypatch.setattr(Image, "_getdecoder", refuse)
    return calls


# ---------------------------------------------------------------------------------------------
# load_image: files that are not usable images.


def test_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(ImageError, match="no such file") as e:
        imlib.load_image(path)
    assert str(path) in str(e.value)


def test_folder(tmp_path):
    with pytest.raises(ImageError, match="folder") as e:
        imlib.load_image(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageError, match="not an image") as e:
        imlib.load_image(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_truncated_file(tmp_path, ext):
    path = save_pil(tmp_path / f"cut.{ext}", Image.fromarray(rgb_u8(64, 80)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot decode|truncated") as e:
        imlib.load_image(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("size", [(1, 1), (imlib.MIN_SIDE - 1, 40), (40, imlib.MIN_SIDE - 1)])
def test_too_small(tmp_path, size):
    path = save_pil(tmp_path / "small.png", Image.new("RGB", size, (10, 20, 30)))
    with pytest.raises(ImageError, match=f"at least {imlib.MIN_SIDE} px") as e:
        imlib.load_image(path)
    assert str(path) in str(e.value)
    assert f"{size[0]}x{size[1]}" in str(e.value)


def test_smallest_accepted_size(tmp_path):
    path = save_pil(tmp_path / "ok.png", Image.new("RGB", (imlib.MIN_SIDE, imlib.MIN_SIDE)))
    assert imlib.load_image(path).shape == (imlib.MIN_SIDE, imlib.MIN_SIDE, 3)


# ---------------------------------------------------------------------------------------------
# load_image: decompression bombs are refused from the header, before any decoding.


def test_huge_png_header_refused_before_decoding(tmp_path, monkeypatch):
    # 20000 x 20000 = 4e8 pixels > MAX_PIXELS (2.56e8); the file itself is tiny. Pillow's own
    # guard is set as the CLI sets it (configure_pillow), or it would refuse first.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    imlib.configure_pillow()
    path = png_header_only(tmp_path / "bomb.png", 20_000, 20_000)
    assert path.stat().st_size < 200
    no_decoding = forbid_decoding(monkeypatch)
    with pytest.raises(ImageError) as e:
        imlib.load_image(path)
    msg = str(e.value)
    assert str(path) in msg
    assert "exceeds" in msg
    assert str(imlib.MAX_PIXELS) in msg.replace(",", "")  # the documented limit
    assert no_decoding == []


def test_own_pixel_limit_message(tmp_path, monkeypatch):
    # jaxstyle's own check, with Pillow's guard left at its (larger) value.
    path = save_pil(tmp_path / "big.png", Image.fromarray(rgb_u8(40, 50)))
    no_decoding = forbid_decoding(monkeypatch)
    monkeypatch.setattr(imlib, "MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match=r"50x40 exceeds the 1,000-pixel limit") as e:
        imlib.load_image(path)
    assert str(path) in str(e.value)
    assert no_decoding == []


@pytest.mark.parametrize("side", [40, 100])  # 1600 > 1000 (warning), 10000 > 2 * 1000 (error)
def test_pillow_and_own_limit_lowered(tmp_path, monkeypatch, side):
    path = save_pil(tmp_path / "big.png", Image.fromarray(rgb_u8(side, side)))
    no_decoding = forbid_decoding(monkeypatch)
    monkeypatch.setattr(imlib, "MAX_PIXELS", 1000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="exceeds") as e:
        imlib.load_image(path)
    assert str(path) in str(e.value)
    assert "1000" in str(e.value).replace(",", "")
    assert no_decoding == []


def test_image_at_the_pixel_limit_loads(tmp_path, monkeypatch):
    path = save_pil(tmp_path / "ok.png", Image.fromarray(rgb_u8(25, 40)))
    monkeypatch.setattr(imlib, "MAX_PIXELS", 1000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert imlib.load_image(path).shape == (25, 40, 3)


# ---------------------------------------------------------------------------------------------
# load_image: every mode becomes float32 HWC RGB in [0, 1].


def check_rgb(arr: np.ndarray, shape: tuple[int, int]) -> None:
    assert arr.dtype == np.float32
    assert arr.shape == (*shape, 3)
    assert arr.min() >= 0.0 and arr.max() <= 1.0


def test_rgb_png_exact(tmp_path):
    u8 = rgb_u8(24, 32)
    arr = imlib.load_image(save_pil(tmp_path / "rgb.png", Image.fromarray(u8)))
    check_rgb(arr, (24, 32))
    np.testing.assert_allclose(arr, u8 / 255.0, atol=1e-7)


def test_grayscale(tmp_path):
    gray = rgb_u8(20, 30)[..., 0]
    arr = imlib.load_image(save_pil(tmp_path / "gray.png", Image.fromarray(gray, mode="L")))
    check_rgb(arr, (20, 30))
    for c in range(3):
        np.testing.assert_allclose(arr[..., c], gray / 255.0, atol=1e-7)


def test_rgba_composited_over_white(tmp_path):
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[:, :4] = (255, 0, 0, 0)  # fully transparent red -> white
    rgba[:, 4:8] = (0, 0, 255, 255)  # opaque blue -> blue
    rgba[:, 8:] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    arr = imlib.load_image(save_pil(tmp_path / "rgba.png", Image.fromarray(rgba, mode="RGBA")))
    check_rgb(arr, (10, 12))
    np.testing.assert_allclose(arr[:, :4], 1.0, atol=1e-7)
    np.testing.assert_allclose(arr[:, 4:8], np.broadcast_to([0, 0, 1], (10, 4, 3)), atol=1e-7)
    np.testing.assert_allclose(arr[:, 8:], 127.0 / 255.0, atol=1.5 * U8)


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (16, 12), (0, 255, 255, 0))  # no cyan, full magenta+yellow: red
    path = save_pil(tmp_path / "cmyk.jpg", cmyk, quality=95)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
    arr = imlib.load_image(path)
    check_rgb(arr, (12, 16))
    np.testing.assert_allclose(arr, np.broadcast_to([1, 0, 0], arr.shape), atol=4 * U8)


def test_16_bit_png(tmp_path):
    values = np.array([[0, 256, 32768, 65535]], np.uint16).repeat(8, axis=0).repeat(3, axis=1)
    path = save_pil(tmp_path / "deep.png", Image.fromarray(values))
    with Image.open(path) as im:
        assert im.mode in ("I;16", "I")  # "I;16" since Pillow 10; older Pillow reads "I"
    arr = imlib.load_image(path)
    check_rgb(arr, (8, 12))
    want = values.astype(np.float64) / 65535.0
    for c in range(3):
        np.testing.assert_allclose(arr[..., c], want, atol=1e-6)


def test_palette_png(tmp_path):
    idx = np.zeros((8, 9), np.uint8)
    idx[:, 3:6], idx[:, 6:] = 1, 2
    img = Image.fromarray(idx, mode="P")
    img.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 30] + [0] * (256 * 3 - 9))
    path = save_pil(tmp_path / "pal.png", img)
    with Image.open(path) as im:
        assert im.mode == "P"
    arr = imlib.load_image(path)
    check_rgb(arr, (8, 9))
    np.testing.assert_allclose(arr[0, 0], [1, 0, 0], atol=1e-7)
    np.testing.assert_allclose(arr[0, 4], [0, 1, 0], atol=1e-7)
    np.testing.assert_allclose(arr[0, 8], np.array([10, 20, 30]) / 255.0, atol=1e-7)


def test_palette_png_with_transparency_is_over_white(tmp_path):
    idx = np.zeros((8, 8), np.uint8)
    idx[:, 4:] = 1
    img = Image.fromarray(idx, mode="P")
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    path = save_pil(tmp_path / "pal.png", img, transparency=0)  # index 0 transparent
    arr = imlib.load_image(path)
    np.testing.assert_allclose(arr[:, :4], 1.0, atol=1e-7)
    np.testing.assert_allclose(arr[:, 4:], np.broadcast_to([0, 0, 1], (8, 4, 3)), atol=1e-7)


def test_exif_orientation_6_is_applied(tmp_path):
    # Stored 40 wide x 20 high: left half red, right half blue. Orientation 6 means "rotate 90
    # degrees clockwise to display", so the upright image is 20 wide x 40 high, red on top.
    u8 = np.zeros((20, 40, 3), np.uint8)
    u8[:, :20] = (255, 0, 0)
    u8[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save_pil(tmp_path / "rot.jpg", Image.fromarray(u8), exif=exif, quality=95)
    arr = imlib.load_image(path)
    check_rgb(arr, (40, 20))
    np.testing.assert_allclose(arr[2:18].mean(axis=(0, 1)), [1, 0, 0], atol=0.05)
    np.testing.assert_allclose(arr[22:38].mean(axis=(0, 1)), [0, 0, 1], atol=0.05)


# ---------------------------------------------------------------------------------------------
# Sizes.


def test_size_for_long_side_keeps_aspect():
    assert imlib.size_for_long_side((48, 64, 3), 32) == (24, 32)
    assert imlib.size_for_long_side((300, 100), 90) == (90, 30)


def test_resize_long_side_range_and_shape():
    img = rgb_u8(30, 40).astype(np.float32) / 255.0
    out = imlib.resize_long_side(img, 20)
    assert out.shape == (15, 20, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0  # Lanczos overshoot is clipped
    assert imlib.resize(img, 30, 40) is not img  # same size: a float32 copy
    np.testing.assert_array_equal(imlib.resize(img, 30, 40), img)


# ---------------------------------------------------------------------------------------------
# save_image: atomic.


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_save_round_trip(tmp_path, ext):
    img = rgb_u8(24, 32).astype(np.float32) / 255.0
    path = imlib.save_image(tmp_path / f"out.{ext}", img)
    assert [p.name for p in tmp_path.iterdir()] == [f"out.{ext}"]
    back = imlib.load_image(path)
    np.testing.assert_allclose(back, img, atol=1e-7 if ext == "png" else 0.1)


def test_save_overwrites_on_success(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"old contents")
    imlib.save_image(path, np.full((9, 10, 3), 0.25, np.float32))
    assert imlib.load_image(path).shape == (9, 10, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_save_non_finite_leaves_existing_file(tmp_path, bad):
    path = imlib.save_image(tmp_path / "out.png", np.full((9, 10, 3), 0.5, np.float32))
    before = snapshot(tmp_path)
    img = np.full((9, 10, 3), 0.5, np.float32)
    img[3, 4, 1] = bad
    with pytest.raises(ImageError, match="non-finite") as e:
        imlib.save_image(path, img)
    assert str(path) in str(e.value)
    assert snapshot(tmp_path) == before


def test_save_bad_extension_leaves_existing_file(tmp_path):
    path = tmp_path / "out.xyz"
    path.write_bytes(b"precious")
    before = snapshot(tmp_path)
    with pytest.raises(ImageError, match=r"unknown output image type '\.xyz'") as e:
        imlib.save_image(path, np.full((9, 10, 3), 0.5, np.float32))
    assert str(path) in str(e.value)
    assert snapshot(tmp_path) == before


def test_save_to_folder_refused(tmp_path):
    folder = tmp_path / "looks_like.png"
    folder.mkdir()
    with pytest.raises(ImageError, match="folder"):
        imlib.save_image(folder, np.full((9, 10, 3), 0.5, np.float32))


def test_save_failing_mid_write_leaves_existing_file(tmp_path, monkeypatch):
    path = imlib.save_image(tmp_path / "out.png", np.full((9, 10, 3), 0.5, np.float32))
    before = snapshot(tmp_path)

    def broken_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"half an image")  # a partial write, then the disk fills up
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="No space"):
        imlib.save_image(path, np.full((9, 10, 3), 0.9, np.float32))
    assert snapshot(tmp_path) == before  # old file byte-identical, no temp file left


# ---------------------------------------------------------------------------------------------
# Colour preservation.


def test_yiq_round_trip():
    x = np.random.default_rng(0).uniform(size=(5, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(imlib.yiq_to_rgb(imlib.rgb_to_yiq(x)), x, atol=1e-5)
    grey = np.full((2, 2, 3), 0.4, np.float32)  # grey has no chrominance
    np.testing.assert_allclose(imlib.rgb_to_yiq(grey)[..., 1:], 0.0, atol=1e-6)
    np.testing.assert_allclose(imlib.rgb_to_yiq(grey)[..., 0], 0.4, atol=1e-6)


def test_transfer_luminance_keeps_content_chrominance():
    rng = np.random.default_rng(1)
    # Mid-range values: the recombined image stays inside [0, 1], so no clipping interferes.
    content = rng.uniform(0.4, 0.6, (12, 17, 3)).astype(np.float32)
    stylised = rng.uniform(0.4, 0.6, (12, 17, 3)).astype(np.float32)
    out = imlib.transfer_luminance(stylised, content)
    assert out.shape == content.shape
    assert out.min() > 0.0 and out.max() < 1.0  # the test's premise: nothing was clipped
    yiq_out, yiq_c, yiq_s = map(imlib.rgb_to_yiq, (out, content, stylised))
    np.testing.assert_allclose(yiq_out[..., 1:], yiq_c[..., 1:], atol=1e-5)  # I, Q of content
    np.testing.assert_allclose(yiq_out[..., 0], yiq_s[..., 0], atol=1e-5)  # Y of stylised
    assert not np.allclose(out, stylised, atol=1e-3)


def test_transfer_luminance_does_not_modify_inputs_and_clips():
    rng = np.random.default_rng(2)
    content = rng.uniform(0, 1, (8, 9, 3)).astype(np.float32)
    stylised = rng.uniform(0, 1, (8, 9, 3)).astype(np.float32)
    c0, s0 = content.copy(), stylised.copy()
    out = imlib.transfer_luminance(stylised, content)
    np.testing.assert_array_equal(content, c0)
    np.testing.assert_array_equal(stylised, s0)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_match_color_gives_target_mean_and_covariance():
    rng = np.random.default_rng(3)
    # Source: uniform noise with correlated channels; target: a different mean and
    # covariance, both narrow enough that the recoloured image is not clipped.
    mix_s = np.array([[1.0, 0.3, 0.0], [0.0, 1.0, 0.5], [0.2, 0.0, 1.0]])
    mix_t = np.array([[0.5, -0.2, 0.1], [0.3, 0.8, 0.0], [0.0, 0.4, 0.6]])
    source = 0.5 + 0.1 * (rng.uniform(-1, 1, (40, 50, 3)) @ mix_s.T)
    target = np.array([0.6, 0.4, 0.3]) + 0.08 * (rng.normal(size=(30, 20, 3)) @ mix_t.T)
    source, target = source.astype(np.float32), target.astype(np.float32)
    assert target.min() > 0 and target.max() < 1 and source.min() > 0 and source.max() < 1

    out = imlib.match_color(source, target)
    assert out.shape == source.shape and out.dtype == np.float32
    assert out.min() > 0 and out.max() < 1  # premise: no clipping
    o, t = out.reshape(-1, 3).astype(np.float64), target.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(o.mean(0), t.mean(0), atol=1e-5)
    np.testing.assert_allclose(np.cov(o, rowvar=False), np.cov(t, rowvar=False), atol=2e-5)
    # A linear recolouring: the source's spatial structure is kept.
    corr = np.corrcoef(out[..., 0].ravel(), source[..., 0].ravel())[0, 1]
    assert abs(corr) > 0.3


# ---------------------------------------------------------------------------------------------
# Memory: an image asked for at a smaller size is shrunk before its float conversion.

MEASURE_PEAK = """
import resource, sys
from jaxstyle import images
images.configure_pillow()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
arr = images.load_image(sys.argv[1], 512)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(arr.shape[0], arr.shape[1], (after - before) * 1024)
"""


def test_large_image_loaded_at_a_small_size_stays_near_its_8bit_size(tmp_path):
    # 8000x6000 RGB: 144 MB as 8-bit, 576 MB as float32. Decoding it whole and converting to
    # float before resizing peaked near 28 bytes a pixel (6.9 GB for 15000x15000); the peak
    # growth must stay under 5 bytes a pixel. Measured in a fresh process (ru_maxrss).
    import subprocess
    import sys

    path = tmp_path / "big.png"
    Image.new("RGB", (8000, 6000), (120, 80, 40)).save(path, compress_level=1)
    r = subprocess.run(
        [sys.executable, "-c", MEASURE_PEAK, str(path)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    h, w, grown = map(int, r.stdout.split())
    assert (h, w) == (384, 512)
    assert grown < 5 * 8000 * 6000, f"peak grew by {grown / 2**20:.0f} MiB"


def test_image_shape_matches_what_load_returns(tmp_path):
    # apply groups images by their header shape before decoding: the two must agree, also
    # for EXIF-rotated files and odd aspect ratios shrunk by an integer factor first.
    img = Image.fromarray(rgb_u8(1001, 3007))
    exif = img.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: height and width swap
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif.tobytes(), quality=90)
    for long_side in (None, 700, 96):
        shape = imlib.image_shape(path, long_side)
        assert imlib.load_image(path, long_side).shape[:2] == shape, long_side
    assert imlib.image_shape(path) == (3007, 1001)
