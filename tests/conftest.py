"""Fixtures shared by every test file (pytest loads this before the tests).

* A persistent XLA compilation cache in a temp dir for the whole session, so tests that build
  the same programs (same shapes and settings) compile them once.
* ``vgg16_path`` / ``vgg16``: the real ImageNet VGG16 from the cache, or a skip with the reason.
* ``JAXSTYLE_AUTOTUNE=0`` unless set: the fixed convolution forms, not measured ones.
* ``shared_images``: the photos and paintings in ``../shared/images``, which a user's machine
  does not have: tests that need them skip with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

# The suite runs the fixed convolution forms (jaxstyle.nets.conv.fixed_forms): measuring every
# shape of every test would cost minutes and make results depend on the machine's load.
# tests/test_autotune.py turns tuning on where it is tested; subprocesses inherit this.
os.environ.setdefault("JAXSTYLE_AUTOTUNE", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

from experiments.lib.paths import SHARED_IMAGES  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def compile_cache(tmp_path_factory):
    """Every compiled program of this session goes into one persistent cache."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    old_dir = jax.config.jax_compilation_cache_dir
    old_min = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla-cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    yield
    jax.config.update("jax_compilation_cache_dir", old_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old_min)
    cc.reset_cache()


@pytest.fixture(scope="session")
def vgg16_path() -> Path:
    """The cached real VGG16 weights file; skips when absent."""
    from jaxstyle import weights as jw

    path = jw.cache_path("vgg16")
    if not path.is_file():
        pytest.skip(f"real weights absent: {path} (fetched by .ci/run)")
    return path


@pytest.fixture(scope="session")
def vgg16(vgg16_path):
    """The real VGG16 loss network (max pooling)."""
    from jaxstyle.nets.vgg import VGGNet
    from jaxstyle.weights import load

    params, meta = load(vgg16_path, "vgg16")
    params = jax.tree_util.tree_map(jax.numpy.asarray, params)
    return VGGNet(params=params, arch="vgg16", convention=meta["convention"])


@pytest.fixture(scope="session")
def shared_images() -> Path:
    """``../shared/images`` (``content/`` and ``style/``); skips where it does not exist."""
    if not (SHARED_IMAGES / "content").is_dir():
        pytest.skip(f"{SHARED_IMAGES} absent (only this project's machines have it)")
    return SHARED_IMAGES
