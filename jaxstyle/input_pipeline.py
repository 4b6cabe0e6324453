"""Training content images as fixed-shape uint8 batches, with tf.data.

Two sources, both giving ``{"image": uint8 [B, S, S, 3]}`` batches forever:

* ``tfds:NAME`` (e.g. ``tfds:coco/2014``, the set Johnson et al. trained on): the ``"image"``
  feature of a prepared TFDS dataset.
* ``folder:PATH``: every image file under ``PATH``, recursively. Files are decoded with Pillow
  through :func:`jaxstyle.images.load_image` (EXIF orientation, grayscale/palette/RGBA/CMYK/16-bit
  to RGB, decompression-bomb guard); unreadable files are skipped, logged once and counted.

Each image is resized so its short side is ``image_size`` (or ``load_size``, when given: AdaIN
crops 256 px from 512 px images; bilinear with antialiasing, so both shrinking and enlarging are
smooth) and cropped to ``image_size`` squared: a random crop seeded
by ``(seed, element index)`` as in Johnson et al., or a centre crop. The order is the usual one
(flax ``examples/imagenet``): shard -> shuffle -> repeat -> map -> filter -> batch -> prefetch,
and two datasets built with the same arguments yield the same batches.

TensorFlow is imported lazily, so importing this module needs no TensorFlow, and it is never
allowed to see a GPU: the accelerators belong to JAX.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxstyle.images import IMAGE_SUFFIXES, load_image

if TYPE_CHECKING:
    import tensorflow as tf

logger = logging.getLogger(__name__)

_INSTALL_HINT = "training needs TensorFlow: pip install 'jaxstyle[train]'"
# Marks the message of the error raised inside tf.numpy_function when a folder holds no readable
# image, so NumpyBatches can re-raise it as a DataError without TensorFlow's wrapping.
_ALL_UNREADABLE = "[jaxstyle:no-readable-images]"


class DataError(Exception):
    """A data source that cannot be used; the message says why and what to do."""


class SkipCounter:
    """Counts the distinct input files skipped as unreadable so far.

    Files are counted once, however many epochs pass over them, so after one full pass the count
    is the number of unreadable files and stays there (reading ahead into the next epoch, as
    prefetching does, does not inflate it). Safe to read while the pipeline runs.
    """

    def __init__(self, num_files: int = 0) -> None:
        self._lock = threading.Lock()
        self._skipped: dict[str, str] = {}
        self._num_files = num_files

    @property
    def count(self) -> int:
        """Number of distinct files skipped so far."""
        with self._lock:
            return len(self._skipped)

    @property
    def files(self) -> list[str]:
        """The skipped files, sorted."""
        with self._lock:
            return sorted(self._skipped)

    def _is_skipped(self, path: str) -> bool:
        with self._lock:
            return path in self._skipped

    def _skip(self, path: str, reason: str) -> None:
        with self._lock:
            first_time = path not in self._skipped
            self._skipped[path] = reason
            all_bad = self._num_files > 0 and len(self._skipped) >= self._num_files
        if first_time:
            logger.warning("skipping unreadable image: %s", reason)
        if all_bad:
            # Without this the filter would drop every element of an endless dataset and the
            # first next() would never return.
            raise DataError(
                f"{_ALL_UNREADABLE} none of the {self._num_files} image files could be read"
            )


def _import_tf() -> Any:
    """Imports TensorFlow with every GPU hidden from it, or says how to install it."""
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        # TensorFlow's devices were already initialised (by the caller); we can only warn.
        if tf.config.get_visible_devices("GPU"):
            logger.warning("TensorFlow already holds a GPU; it may take memory JAX needs")
    return tf


def _import_tfds() -> Any:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    return tfds


def make_dataset(
    source: str,
    *,
    image_size: int = 256,
    batch_size: int = 4,
    seed: int = 0,
    data_dir: str | None = None,
    split: str = "train",
    shuffle_buffer: int = 1000,
    num_shards: int = 1,
    shard_index: int = 0,
    random_crop: bool = True,
    load_size: int | None = None,
) -> tuple[tf.data.Dataset, SkipCounter]:
    """Builds the endless, deterministic dataset of square content crops.

    Args:
        source: ``"tfds:NAME"`` (e.g. ``"tfds:coco/2014"``) or ``"folder:PATH"``.
        image_size: side ``S`` of the square crops.
        batch_size: images per batch (per host when sharded); the last partial batch is dropped.
        seed: fixes the shuffle order and the crops; same seed, same batches.
        data_dir: TFDS data folder (``None``: TFDS's default). Unused for folders.
        split: TFDS split (e.g. ``"train"``, ``"train[:1000]"``). Unused for folders.
        shuffle_buffer: shuffle buffer size, in files for a folder and in examples for TFDS;
            ``0`` or ``1`` disables shuffling.
        num_shards: number of hosts reading disjoint parts of the data.
        shard_index: this host's part, in ``[0, num_shards)``.
        random_crop: random crops (training); ``False`` takes the centre crop.
        load_size: the short side each image is resized to before the crop (AdaIN training:
            256 px crops of 512 px images); ``None``: ``image_size``.

    Returns:
        ``(dataset, skipped)``: the dataset of ``{"image": uint8 [batch_size, S, S, 3]}`` and
        the counter of unreadable files skipped (always 0 for TFDS, whose images were checked
        when the dataset was prepared).

    Raises:
        DataError: unknown source, missing or empty folder, TFDS dataset not prepared.
        ValueError: a non-positive size, or a shard index out of range.
        ImportError: TensorFlow (or TFDS for ``tfds:``) is not installed.
    """
    if image_size < 1 or batch_size < 1:
        raise ValueError(f"image_size and batch_size must be >= 1, got {image_size}, {batch_size}")
    if load_size is not None and load_size < image_size:
        raise ValueError(f"load_size {load_size} is smaller than image_size {image_size}")
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"need 0 <= shard_index < num_shards, got {shard_index}, {num_shards}")
    kind, _, arg = source.partition(":")
    if kind not in ("tfds", "folder") or not arg:
        raise DataError(f"unknown data source {source!r}: use tfds:coco/2014 or folder:PATH")

    tf = _import_tf()
    if kind == "folder":
        files = _list_images(Path(arg).expanduser(), num_shards, shard_index)
        skipped = SkipCounter(len(files))
        # Shuffling the file names (not decoded images) makes a full shuffle cheap.
        ds = tf.data.Dataset.from_tensor_slices([os.fsencode(f) for f in files])
        decode = _pil_decoder(tf, skipped)
    else:
        skipped = SkipCounter()
        ds = _load_tfds(arg, split, data_dir, num_shards, shard_index)
        decode = _tfds_decoder(tf)

    if shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    # The index counts every element of every epoch, so each epoch sees fresh crops while the
    # sequence stays a pure function of the seed (whatever the parallelism).
    ds = ds.repeat().enumerate()
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.filter(lambda index, image, ok: ok)
    crop = _cropper(tf, image_size, seed, random_crop, load_size or image_size)
    ds = ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)

    options = tf.data.Options()
    options.deterministic = True
    ds = ds.with_options(options)
    return ds, skipped


def check_source(source: str) -> None:
    """Checks a source before any work: its form, and that a ``folder:`` holds image files
    (whether they decode is found when they are read). TFDS sources are checked when loaded.

    Raises:
        DataError: naming the source and what is wrong.
    """
    kind, _, arg = source.partition(":")
    if kind not in ("tfds", "folder") or not arg:
        raise DataError(f"unknown data source {source!r}: use tfds:coco/2014 or folder:PATH")
    if kind == "folder":
        _list_images(Path(arg).expanduser(), 1, 0)


class NumpyBatches:
    """The batches of :func:`make_dataset` as numpy uint8 ``[B, S, S, 3]`` arrays.

    Use it as a context manager; the TensorFlow iterator exists only inside the ``with``::

        with NumpyBatches(ds) as batches:
            first = next(batches)

    Why not ``ds.as_numpy_iterator()`` alone: a folder pipeline runs Pillow in TensorFlow's
    threads, and an iterator still alive during interpreter shutdown hangs the process (its
    threads can no longer take the GIL and its destructor waits for them;
    tensorflow/tensorflow#21277). Closing it on leaving the ``with`` destroys it while the
    threads can still finish, and needs no process-wide exit hook.

    Raises:
        DataError: (from ``next``) a folder turned out to hold no readable image.
        RuntimeError: ``next`` outside the ``with``.
    """

    def __init__(self, ds: tf.data.Dataset) -> None:
        self._ds = ds
        self._it: Any = None

    def __enter__(self) -> NumpyBatches:
        self._tf = _import_tf()
        self._it = self._ds.as_numpy_iterator()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Destroys the TensorFlow iterator (its threads finish their work first)."""
        self._it = None

    def __iter__(self) -> NumpyBatches:
        return self

    def __next__(self) -> np.ndarray:
        if self._it is None:
            raise RuntimeError("NumpyBatches: use it inside `with NumpyBatches(ds) as batches:`")
        try:
            return next(self._it)["image"]
        except self._tf.errors.OpError as e:
            if _ALL_UNREADABLE in e.message:
                raise DataError(_unwrap(e.message)) from None
            raise


def _unwrap(message: str) -> str:
    """Our own message out of TensorFlow's wrapping of an error raised in numpy_function."""
    rest = message.split(_ALL_UNREADABLE, 1)[1]
    return rest.splitlines()[0].strip()


def _list_images(root: Path, num_shards: int, shard_index: int) -> list[str]:
    """This shard's image files under ``root``, sorted so every host sees the same list."""
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"image folder {root} {what}")
    files = sorted(
        str(p) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not files:
        exts = " ".join(sorted(IMAGE_SUFFIXES))
        raise DataError(f"image folder {root} holds no image files ({exts})")
    # Sharding the sorted list before shuffling gives hosts disjoint files.
    files = files[shard_index::num_shards]
    if not files:
        raise DataError(f"image folder {root}: shard {shard_index} of {num_shards} is empty")
    return files


def _pil_decoder(tf: Any, skipped: SkipCounter) -> Any:
    """``(index, path) -> (index, uint8 HW3 image, ok)``, decoding with Pillow."""
    blank = np.zeros((1, 1, 3), np.uint8)

    def read(path: bytes) -> tuple[np.ndarray, np.bool_]:
        name = os.fsdecode(path)
        if skipped._is_skipped(name):
            return blank, np.bool_(False)
        try:
            image = load_image(name)
        except Exception as e:  # Pillow's plugins raise many types on malformed files.
            skipped._skip(name, str(e) if name in str(e) else f"{name}: {e}")
            return blank, np.bool_(False)
        return (image * 255.0 + 0.5).astype(np.uint8), np.bool_(True)

    def decode(index: Any, path: Any) -> tuple[Any, Any, Any]:
        # Stateless: the result depends on the path alone (the counting and logging are
        # bookkeeping), and a stateful PyFunc would make the iterator impossible to checkpoint.
        image, ok = tf.numpy_function(read, [path], (tf.uint8, tf.bool), stateful=False)
        image.set_shape([None, None, 3])
        ok.set_shape([])
        return index, image, ok

    return decode


def _tfds_decoder(tf: Any) -> Any:
    """``(index, example) -> (index, uint8 HW3 image, ok)`` for TFDS examples (encoded bytes)."""

    def decode(index: Any, example: dict[str, Any]) -> tuple[Any, Any, Any]:
        # TensorFlow's own decoder: JPEG (CMYK included), PNG, GIF, BMP; channels=3 turns
        # grayscale into RGB and drops alpha. The files were validated when TFDS built them.
        image = tf.io.decode_image(example["image"], channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return index, image, tf.constant(True)

    return decode


def _cropper(tf: Any, size: int, seed: int, random_crop: bool, load: int) -> Any:
    """``(index, image, ok) -> {"image": uint8 [size, size, 3]}``: short side to ``load``, crop
    ``size``."""

    def crop(index: Any, image: Any, ok: Any) -> dict[str, Any]:
        del ok
        hw = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = load / tf.reduce_min(hw)
        # max() guards the short side against rounding below `load`.
        new_hw = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), load)
        image = tf.image.resize(image, new_hw, method="bilinear", antialias=True)
        if random_crop:
            image = tf.image.stateless_random_crop(
                image, [size, size, 3], seed=tf.stack([tf.constant(seed, tf.int64), index])
            )
        else:
            top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
            image = image[top : top + size, left : left + size]
        image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)
        image.set_shape([size, size, 3])
        return {"image": image}

    return crop


def _load_tfds(
    name: str, split: str, data_dir: str | None, num_shards: int, shard_index: int
) -> tf.data.Dataset:
    """``{"image": encoded bytes}`` examples of a prepared TFDS dataset, this host's part."""
    tfds = _import_tfds()
    if num_shards > 1:
        # Each host reads only its part of the files, unlike Dataset.shard, which reads all.
        split = tfds.even_splits(split, n=num_shards)[shard_index]
    # Only the image, still encoded: the shuffle buffer then holds compressed JPEGs (~160 KB
    # each for COCO) rather than decoded images (~1 MB), and the annotations are never parsed.
    decoders = tfds.decode.PartialDecoding(
        {"image": True}, decoders={"image": tfds.decode.SkipDecoding()}
    )
    try:
        ds = tfds.load(
            name,
            split=split,
            data_dir=data_dir,
            shuffle_files=False,
            download=False,
            decoders=decoders,
        )
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(
            f"TFDS has no dataset named {name!r} (see tfds.list_builders()); "
            "for COCO use tfds:coco/2014"
        ) from None
    except AssertionError:
        # TFDS asserts that the prepared files exist; downloading COCO (~20 GB) is too big a
        # side effect to start implicitly, so the user is told how instead.
        where = data_dir or "TFDS's default data dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
        raise DataError(
            f"TFDS dataset {name} is not prepared in {where}. Prepare it once with "
            f"`tfds build {name} --data_dir DIR` (COCO 2014 downloads ~20 GB) and pass "
            "--data-dir DIR; or download and unzip the images yourself (for COCO: "
            "http://images.cocodataset.org/zips/train2014.zip) and use --data folder:PATH"
        ) from None
    except (ValueError, TypeError) as e:
        if "PartialDecoding" in str(e):
            raise DataError(f"TFDS dataset {name} has no 'image' feature") from None
        raise DataError(f"TFDS dataset {name}, split {split!r}: {e}") from None
    return ds
