"""Safe file output: atomic writes, and the checks that run before any work (an output that
resolves to an input, an output that cannot be written)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yields a temporary path beside ``dest``; renames it onto ``dest`` only on success.

    The temporary file lives in the destination's folder so the final ``os.replace`` is atomic
    on the same filesystem. On any exception (including KeyboardInterrupt) it is removed and
    ``dest`` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=dest.parent, prefix=f".{dest.name}.", suffix=suffix or dest.suffix + ".part"
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


class OutputError(Exception):
    """An output path that would overwrite an input or cannot be written; names the path."""


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when ``a`` and ``b`` name the same file (symlinks and ``..`` resolved).

    A path that does not exist yet is compared by its resolved name.
    """
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def refuse_overwriting_inputs(outputs: Iterable[str | Path], inputs: Iterable[str | Path]) -> None:
    """Raises OutputError when any output resolves to any input (symlinks included)."""
    inputs = [Path(p) for p in inputs]
    for out in map(Path, outputs):
        for inp in inputs:
            if same_file(out, inp):
                raise OutputError(
                    f"{out}: is the input {inp}; refusing to overwrite it (choose another -o)"
                )


def check_writable(path: str | Path, *, folder: bool = False) -> None:
    """Raises OutputError unless ``path`` (a file, or a folder with ``folder=True``) can be
    created or replaced: its nearest existing ancestor must be a writable folder, and no
    ancestor may be a file. Writing is probed with a temporary file (removed at once), which
    also catches read-only filesystems that permission bits do not show.
    """
    path = Path(path)
    if path.exists() and folder and not path.is_dir():
        raise OutputError(f"{path}: exists and is not a folder")
    if path.exists() and not folder and path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name")
    parent = path if folder and path.is_dir() else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{path}: cannot be created, {parent} is a file")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".jaxstyle-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{path}: cannot write in {parent} ({e.strerror})") from None
