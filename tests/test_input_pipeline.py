"""Tests for jaxstyle.input_pipeline on small generated folders and TFDS's mock data.

Nothing is downloaded: folders are written here with Pillow, and ``tfds:coco/2014`` is served by
``tfds.testing.mock_data``.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxstyle.input_pipeline import DataError, NumpyBatches, make_dataset

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

S = 32
READABLE = 6  # readable image files in the `mixed` folder
CORRUPT = ("corrupt.jpg", "truncated.png")


def _noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six readable images of every awkward kind, two broken ones and a text file."""
    root = tmp_path_factory.mktemp("mixed")
    (root / "a" / "b").mkdir(parents=True)
    (root / "c").mkdir()
    Image.fromarray(_noise(48, 64, 0)).save(root / "a" / "rgb.jpg")
    # Smaller than S on both sides: must be enlarged.
    Image.fromarray(_noise(20, 30, 1)[..., 0]).save(root / "a" / "b" / "gray.png")
    Image.fromarray(np.dstack([_noise(40, 40, 2), _noise(40, 40, 3)[..., :1]])).save(
        root / "rgba.png"
    )
    Image.fromarray(_noise(50, 36, 4)).convert("CMYK").save(root / "c" / "cmyk.jpg")
    deep = (np.arange(33 * 45, dtype=np.uint16).reshape(33, 45) * 40).astype(np.uint16)
    Image.fromarray(deep).save(root / "c" / "deep16.png")
    Image.fromarray(_noise(24, 70, 5)).convert("P").save(root / "c" / "palette.PNG")
    (root / "corrupt.jpg").write_bytes(np.random.default_rng(6).bytes(500))
    png = io.BytesIO()
    Image.fromarray(_noise(64, 64, 7)).save(png, format="PNG")
    (root / "a" / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    (root / "notes.txt").write_text("not an image, and ignored by its extension")
    return root


def _batches(ds: tf.data.Dataset, n: int) -> list[np.ndarray]:
    with NumpyBatches(ds) as batches:
        return list(itertools.islice(batches, n))


def test_folder_batches_are_fixed_shape_uint8(mixed: Path) -> None:
    ds, _ = make_dataset(f"folder:{mixed}", image_size=S, batch_size=4, seed=0)
    assert ds.element_spec["image"].shape == (4, S, S, 3)
    assert ds.element_spec["image"].dtype == tf.uint8
    for batch in _batches(ds, 5):
        assert batch.shape == (4, S, S, 3) and batch.dtype == np.uint8


def test_corrupt_files_are_skipped_counted_and_logged_once(
    mixed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ds, skipped = make_dataset(f"folder:{mixed}", image_size=S, batch_size=2, seed=0)
    assert skipped.count == 0
    with caplog.at_level(logging.WARNING, logger="jaxstyle.input_pipeline"):
        # Three passes over the repeated dataset: files are counted once, not once per epoch.
        _batches(ds, 3 * READABLE // 2)
    assert skipped.count == len(CORRUPT)
    assert sorted(Path(f).name for f in skipped.files) == sorted(CORRUPT)
    for name in CORRUPT:
        assert sum(name in r.getMessage() for r in caplog.records) == 1


def test_same_seed_same_batches_other_seed_differs(mixed: Path) -> None:
    def first3(seed: int) -> np.ndarray:
        ds, _ = make_dataset(f"folder:{mixed}", image_size=S, batch_size=2, seed=seed)
        return np.stack(_batches(ds, 3))

    a = first3(0)
    np.testing.assert_array_equal(a, first3(0))
    assert not np.array_equal(a, first3(1))


def test_iterator_checkpoint_resumes_identically(mixed: Path, tmp_path: Path) -> None:
    # Training resumes by restoring the tf.data iterator; the Pillow decode must not make the
    # iterator's state unsaveable, and the restored stream must continue exactly.
    ds, _ = make_dataset(f"folder:{mixed}", image_size=S, batch_size=2, seed=3)
    it = iter(ds)
    for _ in range(4):
        next(it)
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "ckpt"))
    want = [next(it)["image"].numpy() for _ in range(3)]
    ds2, _ = make_dataset(f"folder:{mixed}", image_size=S, batch_size=2, seed=3)
    it2 = iter(ds2)
    tf.train.Checkpoint(iterator=it2).read(path).assert_consumed()
    np.testing.assert_array_equal(np.stack(want), [next(it2)["image"].numpy() for _ in range(3)])


def test_epochs_are_reshuffled_and_recropped(tmp_path: Path) -> None:
    Image.fromarray(_noise(40, 80, 0)).save(tmp_path / "wide.png")
    ds, _ = make_dataset(f"folder:{tmp_path}", image_size=S, batch_size=1, seed=0)
    crops = _batches(ds, 4)
    # One 40x80 image: every epoch gives a crop of the same 32x64 resize, not the same crop.
    assert len({c.tobytes() for c in crops}) > 1


def test_drop_remainder(tmp_path: Path) -> None:
    for i in range(3):
        Image.fromarray(_noise(S, S, i)).save(tmp_path / f"{i}.png")
    ds, _ = make_dataset(f"folder:{tmp_path}", image_size=S, batch_size=2, seed=0)
    # 3 files, batches of 2: every batch is full, the repeat runs across epoch boundaries.
    assert all(b.shape == (2, S, S, 3) for b in _batches(ds, 6))
    # Without repeat the static shape would have an unknown batch dimension.
    assert ds.element_spec["image"].shape[0] == 2


def test_grayscale_gives_equal_channels(mixed: Path, tmp_path: Path) -> None:
    shutil.copy(mixed / "a" / "b" / "gray.png", tmp_path / "gray.png")
    ds, _ = make_dataset(f"folder:{tmp_path}", image_size=S, batch_size=2, seed=0)
    for b in _batches(ds, 2):
        np.testing.assert_array_equal(b[..., 0], b[..., 1])
        np.testing.assert_array_equal(b[..., 0], b[..., 2])
        assert b.std() > 10  # an upscaled crop of noise, not a blank image


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("RGB", (200, 30, 60)),
        ("L", (int(0.299 * 200 + 0.587 * 30 + 0.114 * 60),) * 3),
        ("RGBA", (228, 143, 158)),  # half-transparent, composited over white
        ("CMYK", (200, 30, 60)),
        ("P", (200, 30, 60)),
        ("I;16", (128, 128, 128)),
    ],
)
def test_colour_modes_become_rgb(tmp_path: Path, mode: str, expected: tuple[int, ...]) -> None:
    colour = np.full((20, 50, 3), (200, 30, 60), np.uint8)
    if mode == "RGBA":
        img = Image.fromarray(np.dstack([colour, np.full((20, 50, 1), 128, np.uint8)]))
    elif mode == "I;16":
        img = Image.fromarray(np.full((20, 50), 32896, np.uint16))  # 32896 / 65535 * 255 = 128
    else:
        img = Image.fromarray(colour).convert(mode)
    img.save(tmp_path / ("x.jpg" if mode == "CMYK" else "x.png"))
    ds, skipped = make_dataset(
        f"folder:{tmp_path}", image_size=S, batch_size=1, random_crop=False, shuffle_buffer=0
    )
    (batch,) = _batches(ds, 1)
    assert skipped.count == 0
    np.testing.assert_allclose(batch.reshape(-1, 3).mean(0), expected, atol=3)


def test_centre_crop_of_short_side_resize(tmp_path: Path) -> None:
    # 16 x 64 with value 4 * column: resized to 32 x 128, the centre crop keeps output columns
    # 48..79, whose centres sit at source columns 23.75..39.25 (half-pixel convention).
    cols = np.broadcast_to(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (16, 64, 3))
    Image.fromarray(np.ascontiguousarray(cols)).save(tmp_path / "ramp.png")
    ds, _ = make_dataset(f"folder:{tmp_path}", image_size=S, batch_size=1, random_crop=False)
    (batch,) = _batches(ds, 1)
    row = batch[0, S // 2, :, 0].astype(float)
    np.testing.assert_allclose(row[[0, -1]], [23.75 * 4, 39.25 * 4], atol=3)


def test_shards_are_disjoint_and_cover_the_folder(tmp_path: Path) -> None:
    for i in range(6):
        Image.fromarray(np.full((S, S, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    seen = []
    for index in range(2):
        ds, _ = make_dataset(
            f"folder:{tmp_path}", image_size=S, batch_size=1, num_shards=2, shard_index=index
        )
        seen.append({int(b[0, 0, 0, 0]) for b in _batches(ds, 9)})
    assert seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] == {40 * i for i in range(6)}


def test_folder_of_only_unreadable_files_raises_instead_of_hanging(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "bad.png").write_bytes(b"")
    ds, _ = make_dataset(f"folder:{tmp_path}", image_size=S, batch_size=1)
    with NumpyBatches(ds) as batches, pytest.raises(DataError, match="none of the 2 image files"):
        next(batches)


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_bad_folder_names_the_path(tmp_path: Path, make: str) -> None:
    path = tmp_path / "data"
    if make == "empty":
        path.mkdir()
        (path / "readme.txt").write_text("no images here")
    elif make == "file":
        path.write_text("")
    with pytest.raises(DataError, match=str(path)):
        make_dataset(f"folder:{path}", image_size=S)


def test_bad_source_and_arguments() -> None:
    with pytest.raises(DataError, match="folder:PATH"):
        make_dataset("images/")
    with pytest.raises(ValueError, match="shard_index"):
        make_dataset("folder:x", num_shards=2, shard_index=2)


def test_tfds_mock_coco() -> None:
    with tfds.testing.mock_data(num_examples=8):
        ds, skipped = make_dataset("tfds:coco/2014", image_size=S, batch_size=2)
        batches = _batches(ds, 6)  # 12 images: past the end of the 8 examples
        again, _ = make_dataset("tfds:coco/2014", image_size=S, batch_size=2)
        np.testing.assert_array_equal(np.stack(batches[:3]), np.stack(_batches(again, 3)))
    assert all(b.shape == (2, S, S, 3) and b.dtype == np.uint8 for b in batches)
    assert skipped.count == 0


def test_tfds_without_image_feature() -> None:
    with tfds.testing.mock_data(num_examples=2), pytest.raises(DataError, match="'image'"):
        make_dataset("tfds:imdb_reviews", image_size=S)


def test_tfds_not_prepared_says_how_to_prepare(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="tfds build coco/2014") as e:
        make_dataset("tfds:coco/2014", data_dir=str(tmp_path), image_size=S)
    assert "--data-dir" in str(e.value) and str(tmp_path) in str(e.value)
    with pytest.raises(DataError, match="no dataset named"):
        make_dataset("tfds:no_such_dataset", data_dir=str(tmp_path), image_size=S)


def run_python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -c CODE ARGS`` in a fresh process from the repository root; must exit 0."""
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    )


def test_tensorflow_never_sees_a_gpu(tmp_path: Path) -> None:
    # On a machine without a GPU the public API lists no GPU whether or not the pipeline hid
    # them, and once TensorFlow's runtime starts it fills its visible-device list with every
    # physical device. So a fresh process reads that list right after the pipeline imported
    # TensorFlow: it is empty ("everything, GPUs included") unless the pipeline restricted it.
    Image.fromarray(_noise(S, S, 0)).save(tmp_path / "x.png")
    code = (
        "import json, sys, jaxstyle.input_pipeline as ip\n"
        "from tensorflow.python.eager import context\n"
        "tf = ip._import_tf()\n"
        "kinds = [d.device_type for d in context.context()._visible_device_list]\n"
        "ip.make_dataset('folder:' + sys.argv[1], image_size=32)\n"
        "print(json.dumps([kinds, len(tf.config.get_visible_devices('GPU'))]))\n"
    )
    out = run_python(code, str(tmp_path), timeout=120)
    kinds, gpus = json.loads(out.stdout.strip().splitlines()[-1])
    assert kinds, "the pipeline did not restrict TensorFlow's visible devices"
    assert "GPU" not in kinds and gpus == 0


def test_import_without_tensorflow_and_clear_error_on_use() -> None:
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "import jaxstyle.input_pipeline as ip\n"
        "try:\n"
        "    ip.make_dataset('folder:.')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = run_python(code)
    assert "training needs TensorFlow: pip install 'jaxstyle[train]'" in out.stdout


def test_batches_exist_only_inside_the_with(tmp_path: Path) -> None:
    Image.fromarray(_noise(S, S, 0)).save(tmp_path / "x.png")
    ds, _ = make_dataset(f"folder:{tmp_path}", image_size=S, batch_size=1)
    batches = NumpyBatches(ds)
    with pytest.raises(RuntimeError, match="inside `with"):
        next(batches)
    with batches:
        assert next(batches).shape == (1, S, S, 3)
    with pytest.raises(RuntimeError, match="inside `with"):
        next(batches)  # closed on leaving the with: no iterator is left for exit time


def test_exit_inside_the_with_does_not_hang(tmp_path: Path) -> None:
    # With ds.as_numpy_iterator() this script hangs at exit nearly every time: the iterator is
    # destroyed during interpreter shutdown while a Pillow decode of this 300 x 400 image is in
    # flight. NumpyBatches closes it while unwinding out of the with, before shutdown.
    Image.fromarray(_noise(300, 400, 0)).save(tmp_path / "x.png")
    code = (
        "import sys; from jaxstyle.input_pipeline import make_dataset, NumpyBatches\n"
        "ds, _ = make_dataset('folder:' + sys.argv[1], image_size=64, batch_size=2)\n"
        "with NumpyBatches(ds) as it:\n"
        "    for _ in range(3): next(it)\n"
        "    print('done', flush=True)\n"
        "    sys.exit(0)\n"
    )
    out = run_python(code, str(tmp_path), timeout=60)
    assert "done" in out.stdout
