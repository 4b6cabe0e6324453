"""Image files in and out, and the colour-space helpers of colour preservation.

Every image that leaves this module is float32 HWC RGB in [0, 1]. Loading applies the EXIF
orientation, converts grayscale, palette, RGBA (over white), CMYK and 16-bit images to RGB, and
refuses decompression bombs: images above :data:`MAX_PIXELS` pixels.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from jaxstyle.fileio import atomic_path

#: Largest image accepted, in pixels (about 16k x 16k). Larger files are refused before decoding.
MAX_PIXELS = 256_000_000
#: Smallest side accepted, in pixels.
MIN_SIDE = 8
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


def load_image(path: str | Path) -> np.ndarray:
    """Reads an image file as float32 HWC RGB in [0, 1], upright per its EXIF orientation.

    Raises:
        ImageError: missing, unreadable, truncated, too small or too large file.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    try:
        with warnings.catch_warnings():
            # Our own limit below, checked from the header before decoding, gives the
            # documented message; Pillow's bomb error (at twice the limit) still backs it up.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageError(f"{path}: {w}x{h} exceeds the {MAX_PIXELS:,}-pixel limit")
                img.load()
                img = ImageOps.exif_transpose(img)
                arr = _to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (or a format Pillow cannot read)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: refused as a decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: cannot decode image ({e})") from None
    h, w = arr.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{path}: image is {w}x{h}; each side must be at least {MIN_SIDE} px")
    return arr


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

    Raises:
        ImageError: unknown extension, or an image that is not finite.
    """
    fmt = check_output_path(path)
    image = np.asarray(image, dtype=np.float32)
    if not np.all(np.isfinite(image)):
        raise ImageError(f"{path}: refusing to write an image with non-finite values")
    u8 = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    with atomic_path(path) as tmp:
        Image.fromarray(u8, mode="RGB").save(tmp, format=fmt, **kwargs)
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
