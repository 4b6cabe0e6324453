"""Each fast convolution form computes XLA's convolution, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstyle.nets import conv


def _check(fn, ref, x, k, tol=1e-5):
    g = jax.random.normal(jax.random.PRNGKey(7), jax.eval_shape(ref, x, k).shape)
    y, vjp = jax.vjp(fn, x, k)
    y_ref, vjp_ref = jax.vjp(ref, x, k)
    np.testing.assert_allclose(y, y_ref, atol=tol * float(jnp.max(jnp.abs(y_ref))))
    for a, b in zip(vjp(g), vjp_ref(g), strict=True):
        np.testing.assert_allclose(a, b, atol=tol * float(jnp.max(jnp.abs(b))))


def _inputs(x_shape, k_shape):
    kx, kk = jax.random.split(jax.random.PRNGKey(0))
    return jax.random.normal(kx, x_shape), jax.random.normal(kk, k_shape)


def test_winograd_matches_xla():
    x, k = _inputs((2, 18, 22, 32), (3, 3, 32, 16))
    _check(conv.conv3x3_winograd, conv.xla_conv, x, k)


def test_vgg_winograd_and_its_own_gradient_match_xla():
    # The gradient to the input is Winograd with the flipped kernel (taps permuted, channels
    # swapped in the matmul): a wrong tap order or channel swap shows here, cin != cout.
    x, k = _inputs((2, 10, 14, 24), (3, 3, 24, 40))
    _check(conv.winograd_same3x3, conv._same_xla, x, k)


def test_vgg_winograd_gradient_under_vmap():
    # Gatys vmaps its loss over the content images of a batch: the custom gradient batches.
    x, k = _inputs((3, 1, 8, 6, 8), (3, 3, 8, 12))

    def grads(form):
        loss = lambda x: jnp.sum(jnp.tanh(form(x, k)) ** 2)  # noqa: E731
        return jax.jit(jax.vmap(jax.grad(loss)))(x)

    ref = grads(conv._same_xla)
    np.testing.assert_allclose(
        grads(conv.winograd_same3x3), ref, atol=1e-5 * float(jnp.max(jnp.abs(ref)))
    )


@pytest.mark.parametrize(
    ("x_shape", "k_shape"),
    [
        ((2, 24, 28, 3), (9, 9, 3, 8)),
        ((1, 20, 24, 2), (5, 5, 2, 6)),
        ((1, 24, 28, 12), (9, 9, 12, 3)),
    ],
)
def test_space_to_depth_matches_xla(x_shape, k_shape):
    _check(conv.conv_space_to_depth, conv.xla_conv, *_inputs(x_shape, k_shape))


@pytest.mark.parametrize("x_shape", [(2, 24, 28, 16), (1, 23, 26, 16)])  # tiles of 4, and not
def test_few_out_matches_xla(x_shape):
    _check(conv.conv_few_out, conv.xla_conv, *_inputs(x_shape, (9, 9, 16, 3)))


@pytest.mark.parametrize("cin", [8, 96])  # the im2col and the XLA inner convolution
def test_upsample_conv_matches_upsample_then_conv(cin):
    x, k = _inputs((2, 6, 10, cin), (3, 3, cin, 5))

    def ref(x, k):
        up = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return conv.xla_conv(jnp.pad(up, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect"), k)

    _check(conv.upsample_conv3x3, ref, x, k)


@pytest.mark.parametrize(
    ("x_shape", "k_shape", "stride"),
    [
        ((1, 24, 24, 3), (9, 9, 3, 8), 1),
        ((1, 24, 24, 8), (9, 9, 8, 3), 1),
        ((1, 10, 12, 32), (3, 3, 32, 8), 1),
        ((1, 11, 12, 32), (3, 3, 32, 8), 1),
        ((1, 10, 12, 8), (3, 3, 8, 16), 2),
    ],
)
def test_conv2d_dispatch_matches_xla(x_shape, k_shape, stride):
    x, k = _inputs(x_shape, k_shape)
    _check(lambda x, k: conv.conv2d(x, k, stride), lambda x, k: conv.xla_conv(x, k, stride), x, k)
