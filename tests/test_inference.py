"""Tests for jaxstyle.inference: bucketed, batched application equals the network on each image
alone (issue 9's "apply is exact"), for both upsampling kinds and sizes on and off the bucket."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstyle import inference
from jaxstyle.images import ImageFile, save_image
from jaxstyle.nets import transformer_net as tn

SIZES = [(96, 72), (50, 37), (64, 64), (9, 130)]  # on and off the bucket, and not multiples of 4


def alone(params, cfg, image: np.ndarray) -> np.ndarray:
    return np.asarray(tn.stylize(params, jnp.asarray(image[None]), cfg))[0]


@pytest.mark.parametrize("upsample", ["nearest", "transpose"])
def test_bucketed_batches_equal_each_image_alone(upsample):
    cfg = tn.NetConfig(channels=(8, 16, 16), num_res=1, upsample=upsample)
    params = tn.init_params(cfg, jax.random.PRNGKey(1))
    rng = np.random.default_rng(0)
    images = [rng.uniform(0, 1, (h, w, 3)).astype(np.float32) for h, w in SIZES]
    outs = inference.apply_images(params, cfg, images, bucket=64, batch_size=3)
    for image, out in zip(images, outs, strict=True):
        ref = alone(params, cfg, image)
        assert out.shape == image.shape
        assert ref.std() > 0.05  # a network whose output varies, so equality means something
        np.testing.assert_array_less(np.abs(out - ref).max(), 1 / 255)


def test_the_canvas_without_regions_would_differ():
    # What apply did before: the network on the padded canvas. The test above can fail: this is
    # how far from the image alone that lands (instance-norm statistics and borders).
    cfg = tn.TINY
    params = tn.init_params(cfg, jax.random.PRNGKey(1))
    image = np.random.default_rng(0).uniform(0, 1, (96, 72, 3)).astype(np.float32)
    canvas = np.pad(image, ((0, 32), (0, 56), (0, 0)), mode="reflect")
    y = np.asarray(tn.TransformerNet(cfg).apply({"params": params}, jnp.asarray(canvas[None])))
    assert np.abs(y[0, :96, :72] - alone(params, cfg, image)).max() > 5 / 255


def test_image_files_are_decoded_per_batch_and_not_kept(tmp_path, monkeypatch):
    cfg = tn.TINY
    params = tn.init_params(cfg, jax.random.PRNGKey(1))
    rng = np.random.default_rng(0)
    files = []
    for i, (h, w) in enumerate(SIZES):
        path = save_image(tmp_path / f"{i}.png", rng.uniform(0, 1, (h, w, 3)))
        files.append(ImageFile.open(path))
    loads, done = [], {}
    real = ImageFile.load
    monkeypatch.setattr(ImageFile, "load", lambda self: loads.append(self.path) or real(self))
    result = inference.apply_images(
        params, cfg, files, bucket=64, batch_size=2, on_done=lambda i, y: done.setdefault(i, y)
    )
    assert result == [None] * len(files)  # handed over, not kept
    assert sorted(done) == list(range(len(files))) and len(loads) == len(files)
    for i, f in enumerate(files):
        np.testing.assert_array_less(np.abs(done[i] - alone(params, cfg, f.load())).max(), 1 / 255)
