"""Tests for jaxstyle.losses: every loss under ``jax.jit`` against numpy or a hand computation.

Shapes are small, non-square (H != W, C != H) and carry leading batch axes, so a transposed
reshape or a normalisation by the wrong count cannot pass by symmetry.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstyle import losses

RTOL = 1e-5


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def np_gram(f: np.ndarray) -> np.ndarray:
    """Reference Gram matrix: a loop-free but independent formulation in float64."""
    *lead, h, w, c = f.shape
    flat = f.astype(np.float64).reshape(*lead, h * w, c)
    return np.swapaxes(flat, -1, -2) @ flat / (c * h * w)


def np_tv(x: np.ndarray) -> np.ndarray:
    """Reference total variation with explicit pair counts."""
    x = x.astype(np.float64)
    h, w, c = x.shape[-3:]
    dx = np.diff(x, axis=-2)  # horizontal neighbours: (h, w-1, c)
    dy = np.diff(x, axis=-3)  # vertical neighbours: (h-1, w, c)
    n = h * (w - 1) * c + (h - 1) * w * c
    return ((dx**2).sum(axis=(-3, -2, -1)) + (dy**2).sum(axis=(-3, -2, -1))) / n


# ---------------------------------------------------------------------------------------------
# gram


def test_gram_by_hand():
    # One image, H=1, W=2, C=2: pixels (1, 2) and (3, 4).
    f = jnp.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    # F^T F = [[1+9, 2+12], [2+12, 4+16]] = [[10, 14], [14, 20]], divided by C*H*W = 4.
    want = np.array([[[2.5, 3.5], [3.5, 5.0]]])
    np.testing.assert_allclose(jax.jit(losses.gram)(f), want, rtol=RTOL)


def test_gram_matches_numpy_with_batch_axes(rng):
    f = rng.normal(size=(2, 3, 5, 7, 4)).astype(np.float32)  # batch axes (2, 3), H=5, W=7, C=4
    got = jax.jit(losses.gram)(f)
    assert got.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(got, np_gram(f), rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(got, np.swapaxes(got, -1, -2), rtol=RTOL)  # symmetric


def test_gram_is_size_independent_for_a_tiled_image(rng):
    # Tiling an image 2x3 leaves its normalised Gram matrix unchanged: why the C*H*W
    # normalisation lets style weights carry over between image sizes.
    f = rng.normal(size=(1, 4, 6, 3)).astype(np.float32)
    tiled = np.tile(f, (1, 2, 3, 1))
    np.testing.assert_allclose(
        jax.jit(losses.gram)(tiled), jax.jit(losses.gram)(f), rtol=1e-4, atol=1e-6
    )


# ---------------------------------------------------------------------------------------------
# content_loss and style_loss


def test_content_loss_by_hand():
    a = jnp.zeros((1, 1, 2, 2))
    b = jnp.array([[[[1.0, 2.0], [3.0, 0.0]]]])
    # (1 + 4 + 9 + 0) / 4 entries
    np.testing.assert_allclose(jax.jit(losses.content_loss)(a, b), [3.5], rtol=RTOL)


def test_content_loss_matches_numpy_with_batch_axes(rng):
    x = rng.normal(size=(2, 3, 5, 7, 4)).astype(np.float32)
    t = rng.normal(size=(2, 3, 5, 7, 4)).astype(np.float32)
    got = jax.jit(losses.content_loss)(x, t)
    assert got.shape == (2, 3)
    want = ((x.astype(np.float64) - t) ** 2).reshape(2, 3, -1).mean(-1)
    np.testing.assert_allclose(got, want, rtol=RTOL)


def test_content_loss_broadcasts_a_shared_target(rng):
    x = rng.normal(size=(3, 5, 7, 4)).astype(np.float32)
    t = rng.normal(size=(1, 5, 7, 4)).astype(np.float32)
    got = jax.jit(losses.content_loss)(x, t)
    want = [((x[i].astype(np.float64) - t[0]) ** 2).mean() for i in range(3)]
    np.testing.assert_allclose(got, want, rtol=RTOL)


def test_style_loss_by_hand():
    g = jnp.array([[1.0, 2.0], [2.0, 5.0]])
    s = jnp.array([[0.0, 2.0], [2.0, 1.0]])
    # (1 + 0 + 0 + 16) / 4 entries
    np.testing.assert_allclose(jax.jit(losses.style_loss)(g, s), 4.25, rtol=RTOL)


def test_style_loss_matches_numpy_on_grams_of_features(rng):
    fx = rng.normal(size=(2, 5, 7, 4)).astype(np.float32)
    fs = rng.normal(size=(2, 6, 3, 4)).astype(np.float32)  # another size: Grams are C x C

    @jax.jit
    def fn(fx, fs):
        return losses.style_loss(losses.gram(fx), losses.gram(fs))

    got = fn(fx, fs)
    assert got.shape == (2,)
    want = ((np_gram(fx) - np_gram(fs)) ** 2).mean(axis=(-2, -1))
    np.testing.assert_allclose(got, want, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# tv_loss


def test_tv_loss_by_hand():
    # A 2x3 one-channel image:  0 1 3
    #                           2 2 2
    x = jnp.array([[[[0.0], [1.0], [3.0]], [[2.0], [2.0], [2.0]]]])
    # horizontal: (1, 2, 0, 0) -> 1 + 4 = 5; vertical: (2, 1, -1) -> 4 + 1 + 1 = 6.
    # pairs: 2*2 horizontal + 1*3 vertical = 7.
    np.testing.assert_allclose(jax.jit(losses.tv_loss)(x), [11.0 / 7.0], rtol=RTOL)


def test_tv_loss_matches_numpy_with_batch_axes(rng):
    x = rng.uniform(size=(2, 3, 5, 7, 3)).astype(np.float32)
    got = jax.jit(losses.tv_loss)(x)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, np_tv(x), rtol=RTOL)


def test_tv_loss_of_a_constant_image_is_zero():
    np.testing.assert_array_equal(jax.jit(losses.tv_loss)(jnp.full((1, 4, 9, 3), 0.3)), [0.0])


# ---------------------------------------------------------------------------------------------
# style_targets and gatys_loss


def test_style_targets_stack_one_gram_per_style(rng):
    a = {"relu1_1": rng.normal(size=(1, 6, 4, 3)).astype(np.float32)}
    b = {"relu1_1": rng.normal(size=(1, 5, 8, 3)).astype(np.float32)}
    got = losses.style_targets([a, b])
    assert got["relu1_1"].shape == (2, 3, 3)
    np.testing.assert_allclose(got["relu1_1"][0], np_gram(a["relu1_1"])[0], rtol=1e-4)
    np.testing.assert_allclose(got["relu1_1"][1], np_gram(b["relu1_1"])[0], rtol=1e-4)


def test_gatys_loss_matches_numpy(rng):
    h, w = 6, 10  # non-square image; the layers below are non-square too
    image = rng.uniform(size=(1, h, w, 3)).astype(np.float32)
    feats = {
        "relu1_1": rng.normal(size=(1, h, w, 4)).astype(np.float32),
        "relu2_1": rng.normal(size=(1, h // 2, w // 2, 5)).astype(np.float32),
        "relu3_1": rng.normal(size=(1, h // 3, w // 5, 6)).astype(np.float32),
    }
    content_t = {
        "relu2_1": rng.normal(size=(1, h // 2, w // 2, 5)).astype(np.float32),
        "relu3_1": rng.normal(size=(1, h // 3, w // 5, 6)).astype(np.float32),
    }
    # Two style images: Grams of features of other sizes.
    style_g = {
        name: np.stack(
            [np_gram(rng.normal(size=(1, 7, 3 + k, f.shape[-1])))[0] for k in range(2)]
        ).astype(np.float32)
        for name, f in feats.items()
        if name in ("relu1_1", "relu2_1")
    }
    layer_w = {"relu1_1": 0.5, "relu2_1": 2.0}
    blend = np.array([0.25, 0.75], np.float32)
    cw, sw, tw = 1.5, 10.0, 3.0

    @jax.jit
    def fn(feats, image, content_t, style_g, layer_w, blend):
        return losses.gatys_loss(
            feats,
            image,
            content_t,
            style_g,
            content_weight=cw,
            style_weight=sw,
            tv_weight=tw,
            style_layer_weights=layer_w,
            style_blend_weights=blend,
        )

    total, terms = fn(feats, image, content_t, style_g, layer_w, blend)

    content = sum(((feats[n].astype(np.float64) - t) ** 2).mean() for n, t in content_t.items())
    style = 0.0
    for name, grams in style_g.items():
        g = np_gram(feats[name])[0]
        style += layer_w[name] * sum(
            blend[k] * ((g - grams[k]) ** 2).mean() for k in range(len(grams))
        )
    tv = np_tv(image)[0]
    want_total = cw * content + sw * style + tw * tv

    assert set(terms) == {"content", "style", "tv", "total"}
    for v in (total, *terms.values()):
        assert np.shape(v) == ()
    np.testing.assert_allclose(terms["content"], content, rtol=1e-4)
    np.testing.assert_allclose(terms["style"], style, rtol=1e-4)
    np.testing.assert_allclose(terms["tv"], tv, rtol=1e-4)
    np.testing.assert_allclose(total, want_total, rtol=1e-4)
    np.testing.assert_allclose(terms["total"], total, rtol=0)


def test_gatys_loss_is_zero_at_its_targets(rng):
    feats = {"relu1_1": rng.normal(size=(1, 4, 6, 3)).astype(np.float32)}
    image = np.full((1, 4, 6, 3), 0.5, np.float32)  # constant: tv = 0
    grams = np.asarray(losses.gram(jnp.asarray(feats["relu1_1"])))  # (1, 3, 3): K = 1
    total, terms = jax.jit(
        lambda f, x, c, s: losses.gatys_loss(
            f,
            x,
            c,
            s,
            content_weight=1.0,
            style_weight=1.0,
            tv_weight=1.0,
            style_layer_weights={"relu1_1": 1.0},
            style_blend_weights=jnp.ones((1,)),
        )
    )(feats, image, feats, {"relu1_1": grams})
    np.testing.assert_allclose(total, 0.0, atol=1e-10)
