"""Where things are: the repository, the default image folders, and which files are images."""

from __future__ import annotations

from pathlib import Path

from jaxstyle.images import IMAGE_SUFFIXES

#: The repository root (``experiments/`` is one of its folders).
REPO = Path(__file__).resolve().parents[2]
#: ``../shared/images`` beside the repository, with ``content/`` and ``style/`` folders: the
#: default of ``--content-dir``/``--style-dir`` where it exists (this project's machines).
SHARED_IMAGES = REPO.parent / "shared" / "images"
#: The kinds of input folder a script takes.
KINDS = ("content", "style")


def default_image_dir(kind: str) -> Path:
    """The default folder of ``kind`` images (it may not exist)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return SHARED_IMAGES / kind


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    return sorted(
        p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def lookup(folder: str | Path, name: str) -> Path | None:
    """``folder/name`` if it is an image file, else ``folder/name.SUFFIX``; None if neither."""
    folder = Path(folder)
    if (folder / name).is_file():
        return folder / name
    for p in list_images(folder):
        if p.stem == name:
            return p
    return None
