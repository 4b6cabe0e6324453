"""Image files in and out, and the colour-space helpers of colour preservation.

Every image that leaves this module is float32 HWC RGB in [0, 1]. Loading applies the EXIF
orientation, converts grayscale, palette, RGBA (over white), CMYK and 16-bit images to RGB, and
refuses decompression bombs: images above :data:`MAX_PIXELS` pixels, read from the header.

Memory: an image asked for at a smaller size (``long_side``) is shrunk while still in its
8-bit form (JPEG decodes at 1/2, 1/4 or 1/8 scale directly; other formats are box-reduced by
an integer factor) and only then converted to float32, so a 15000x15000 PNG loaded for a
512 px run peaks near its 8-bit decode (~0.7 GB), not its float copy (2.7 GB and more).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from jaxstyle.fileio import atomic_path

#: The suffixes of the image files that folders are searched for (lowercase).
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
)
#: Never more than this many pixels (about 16k x 16k), however large the machine.
PIXEL_CAP = 256_000_000
#: Bytes per pixel of the largest decoded form of an image (RGBA or CMYK, 8 bits a channel).
DECODED_BYTES_PER_PIXEL = 4


def physical_memory() -> int:
    """Bytes of physical memory of this machine (8 GiB where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def pixel_limit() -> int:
    """The rule for :data:`MAX_PIXELS`: an image's 8-bit decode (4 bytes a pixel) must fit in a
    quarter of physical memory, and never more than :data:`PIXEL_CAP` pixels."""
    return min(PIXEL_CAP, physical_memory() // (4 * DECODED_BYTES_PER_PIXEL))


#: Largest image accepted, in pixels. Larger files are refused from the header, before decoding.
MAX_PIXELS = pixel_limit()
#: Smallest side accepted, in pixels.
MIN_SIDE = 8


def configure_pillow() -> None:
    """Aligns Pillow's process-wide decompression-bomb guard with :data:`MAX_PIXELS`.

    Pillow refuses images over twice ``Image.MAX_IMAGE_PIXELS`` (about 179 M pixels by default)
    while opening them, before this module's own header check can run. That setting is global to
    the process, so only the command line changes it; a program that imports jaxstyle keeps
    Pillow's guard as it set it.
    """
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageError(Exception):
    """An image that cannot be read or written; the message names the file and the reason."""


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> float32 HWC RGB in [0, 1]."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float32) / 65535.0
        return np.repeat(arr[..., None], 3, axis=-1)
    if img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        hi = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return np.repeat(np.clip(arr / hi, 0, 1)[..., None], 3, axis=-1)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _open_checked(path: Path) -> Image.Image:
    """Opens ``path`` (header only) and refuses it before decoding if it is too large."""
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    img = Image.open(path)
    w, h = img.size
    if w * h > MAX_PIXELS:
        img.close()
        raise ImageError(
            f"{path}: {w}x{h} exceeds the {MAX_PIXELS:,}-pixel limit (a quarter of this "
            f"machine's memory at {DECODED_BYTES_PER_PIXEL} bytes a pixel, at most {PIXEL_CAP:,})"
        )
    return img


def _upright_size(img: Image.Image) -> tuple[int, int]:
    """``(width, height)`` after the EXIF orientation is applied, from the header alone."""
    w, h = img.size
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is ignored, as exif_transpose does
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _guarded(path: Path, read):
    """Runs ``read(image)`` on the opened file, turning every decoder failure into ImageError."""
    try:
        with warnings.catch_warnings():
            # Our own limit, checked from the header before decoding, gives the documented
            # message; Pillow's bomb error (at twice its own limit) still backs it up.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _open_checked(path) as img:
                return read(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (or a format Pillow cannot read)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: refused as a decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: cannot decode image ({e})") from None


def image_shape(path: str | Path, long_side: int | None = None) -> tuple[int, int]:
    """``(height, width)`` that :func:`load_image` will return, read from the header only."""
    path = Path(path)
    w, h = _guarded(path, _upright_size)
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{path}: image is {w}x{h}; each side must be at least {MIN_SIDE} px")
    if long_side is not None and max(h, w) > long_side:
        return size_for_long_side((h, w), long_side)
    return h, w


def _shrink_8bit(img: Image.Image, long_side: int) -> Image.Image:
    """Decodes ``img`` at most about 2x larger than ``long_side`` (never smaller)."""
    w, h = _upright_size(img)
    if img.format == "JPEG":  # the DCT decodes at 1/2, 1/4 or 1/8 scale directly
        scale = long_side / max(w, h)
        img.draft(img.mode, (max(1, int(img.size[0] * scale)), max(1, int(img.size[1] * scale))))
    img.load()
    factor = max(img.size) // (2 * long_side)
    if factor >= 2 and img.mode in ("RGB", "RGBA", "L", "LA", "CMYK", "I", "F", "I;16"):
        img = img.reduce(factor)
    return img


def load_image(path: str | Path, long_side: int | None = None) -> np.ndarray:
    """Reads an image file as float32 HWC RGB in [0, 1], upright per its EXIF orientation.

    Args:
        path: any image Pillow reads.
        long_side: if given and the image is larger, it is shrunk to this long side (Lanczos),
            mostly before the float conversion, so memory follows the size asked for.

    Raises:
        ImageError: missing, unreadable, truncated, too small or too large file.
    """
    path = Path(path)

    def read(img: Image.Image) -> tuple[np.ndarray, tuple[int, int]]:
        w, h = _upright_size(img)
        if long_side is not None and max(h, w) > long_side:
            target = size_for_long_side((h, w), long_side)  # from the original's aspect
            img = _shrink_8bit(img, long_side)
        else:
            target = (h, w)
            img.load()
        return _to_rgb(ImageOps.exif_transpose(img)), target

    arr, (h, w) = _guarded(path, read)
    if min(arr.shape[:2]) < MIN_SIDE:
        raise ImageError(
            f"{path}: image is {arr.shape[1]}x{arr.shape[0]}; each side must be at least "
            f"{MIN_SIDE} px"
        )
    return resize(arr, h, w)


@dataclasses.dataclass(frozen=True)
class ImageFile:
    """An image file known by its header: its shape now, its pixels only when loaded.

    ``shape`` is the ``(height, width)`` that :meth:`load` returns (upright, shrunk to
    ``long_side`` if given), so callers can group and check images before decoding any.
    """

    path: Path
    shape: tuple[int, int]
    long_side: int | None = None
    alpha: bool = False  # the file has transparency (see load_alpha)

    @classmethod
    def open(cls, path: str | Path, long_side: int | None = None) -> ImageFile:
        """Reads and checks the header of ``path``; raises ImageError for a bad file."""
        return cls(Path(path), image_shape(path, long_side), long_side, has_alpha(path))

    def load(self) -> np.ndarray:
        """The pixels, float32 HWC RGB in [0, 1]."""
        return load_image(self.path, self.long_side)

    def load_alpha(self) -> np.ndarray | None:
        """The transparency, float32 HW in [0, 1] the size of :meth:`load`'s; ``None``
        for an opaque file."""
        return load_alpha(self.path, self.long_side) if self.alpha else None


#: Modes whose images carry an alpha channel (a palette image may carry one in its info).
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
#: Output formats that keep an alpha channel.
ALPHA_FORMATS = frozenset({"PNG", "WEBP", "TIFF"})


def _alpha_in(img: Image.Image) -> bool:
    return img.mode in ALPHA_MODES or (img.mode == "P" and "transparency" in img.info)


def has_alpha(path: str | Path) -> bool:
    """Whether the image file has transparency (an alpha channel, or a palette's), from its
    header."""
    return bool(_guarded(Path(path), _alpha_in))


def load_alpha(path: str | Path, long_side: int | None = None) -> np.ndarray | None:
    """The alpha channel of an image file as float32 HW in [0, 1], upright and the size
    :func:`load_image` gives with the same ``long_side``; ``None`` for an opaque file.

    The network sees the image composited over white (:func:`load_image`); the alpha is put
    back on its output (:func:`save_image` with four channels).
    """
    path = Path(path)

    def read(img: Image.Image) -> np.ndarray | None:
        if not _alpha_in(img):
            return None
        img = ImageOps.exif_transpose(img.convert("RGBA"))
        return np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0

    alpha = _guarded(path, read)
    if alpha is None:
        return None
    h, w = image_shape(path, long_side)
    return resize(alpha[..., None], h, w)[..., 0]


def with_alpha(image: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """``image`` (HWC RGB) with ``alpha`` (HW, resized to the image if needed) as a fourth
    channel; ``image`` itself when ``alpha`` is ``None``."""
    if alpha is None:
        return image
    if alpha.shape[:2] != image.shape[:2]:
        alpha = resize(alpha[..., None], *image.shape[:2])[..., 0]
    return np.concatenate([image[..., :3], alpha[..., None].astype(np.float32)], axis=-1)


def split_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An HWC RGBA float image in [0, 1] as (RGB composited over white, alpha), as
    :func:`load_image` and :func:`load_alpha` read a file."""
    rgb, alpha = image[..., :3], image[..., 3:]
    return (rgb * alpha + (1.0 - alpha)).astype(np.float32), alpha[..., 0].astype(np.float32)


def keeps_alpha(path: str | Path) -> bool:
    """Whether ``path``'s format (from its extension) can hold an alpha channel."""
    return _FORMATS.get(Path(path).suffix.lower()) in ALPHA_FORMATS


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes an HWC float image with Lanczos (bicubic when enlarging by a lot)."""
    if image.shape[:2] == (height, width):
        return image.astype(np.float32)
    chans = [
        np.asarray(
            Image.fromarray(image[..., i].astype(np.float32), mode="F").resize(
                (width, height), Image.Resampling.LANCZOS
            )
        )
        for i in range(image.shape[-1])
    ]
    return np.clip(np.stack(chans, axis=-1), 0.0, 1.0).astype(np.float32)


def size_for_long_side(shape: tuple[int, ...], long_side: int) -> tuple[int, int]:
    """``(height, width)`` with the longer side ``long_side`` and the aspect ratio kept."""
    h, w = shape[:2]
    scale = long_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize_long_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """Resizes so the longer side is ``long_side`` pixels."""
    return resize(image, *size_for_long_side(image.shape, long_side))


_FORMATS = {ext.lower(): fmt for ext, fmt in Image.registered_extensions().items()}


def check_output_path(path: str | Path) -> str:
    """The Pillow format for ``path``'s extension; raises ImageError if there is none."""
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise ImageError(f"{path}: unknown output image type {path.suffix!r} (use .png or .jpg)")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder; give an image file name")
    return fmt


def save_image(path: str | Path, image: np.ndarray) -> Path:
    """Writes an HWC RGB float image in [0, 1] atomically (the format from the extension).

    A fourth channel is alpha: written as RGBA where the format keeps it
    (:data:`ALPHA_FORMATS`), dropped (the RGB as it is) where it does not.

    Raises:
        ImageError: unknown extension, or an image that is not finite.
    """
    fmt = check_output_path(path)
    image = np.asarray(image, dtype=np.float32)
    if not np.all(np.isfinite(image)):
        raise ImageError(f"{path}: refusing to write an image with non-finite values")
    u8 = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    mode = "RGBA" if u8.shape[-1] == 4 and fmt in ALPHA_FORMATS else "RGB"
    with atomic_path(path) as tmp:
        Image.fromarray(u8[..., : len(mode)], mode=mode).save(tmp, format=fmt, **kwargs)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Colour preservation (Gatys, Bethge, Hertzmann & Shechtman 2016, "Preserving color in neural
# artistic style transfer").

_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
    dtype=np.float32,
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


def rgb_to_yiq(image: np.ndarray) -> np.ndarray:
    return image @ _RGB_TO_YIQ.T


def yiq_to_rgb(image: np.ndarray) -> np.ndarray:
    return image @ _YIQ_TO_RGB.T


def transfer_luminance(stylised: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Luminance of ``stylised`` with the chrominance (I, Q in YIQ) of ``content``.

    This is the paper's luminance-only variant applied as a final step (as neural-style's
    ``-original_colors``): the style's colours are dropped, its strokes and texture kept.
    """
    yiq = rgb_to_yiq(stylised)
    yiq[..., 1:] = rgb_to_yiq(content)[..., 1:]
    return np.clip(yiq_to_rgb(yiq), 0.0, 1.0)


def match_color(source: np.ndarray, target: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Recolours ``source`` so its RGB mean and covariance equal ``target``'s.

    The linear colour transfer of the paper's "colour histogram matching": ``x' = A (x - mu_s)
    + mu_t`` with ``A = C_t^{1/2} C_s^{-1/2}`` (symmetric matrix square roots).
    """
    s = source.reshape(-1, 3).astype(np.float64)
    t = target.reshape(-1, 3).astype(np.float64)
    mu_s, mu_t = s.mean(0), t.mean(0)
    cov_s = np.cov(s, rowvar=False) + eps * np.eye(3)
    cov_t = np.cov(t, rowvar=False) + eps * np.eye(3)

    def sqrtm(m: np.ndarray, power: float) -> np.ndarray:
        vals, vecs = np.linalg.eigh(m)
        return (vecs * np.clip(vals, eps, None) ** power) @ vecs.T

    a = sqrtm(cov_t, 0.5) @ sqrtm(cov_s, -0.5)
    out = (s - mu_s) @ a.T + mu_t
    return np.clip(out.reshape(source.shape), 0.0, 1.0).astype(np.float32)
