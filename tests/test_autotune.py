"""Convolution forms chosen by measurement (jaxstyle.autotune): every form computes the
reference's values and gradients, the tuned networks equal XLA's convolutions, the choice is
measured once and read back, and tuning off gives the fixed rules."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstyle import autotune, backend
from jaxstyle.nets import conv

# (kind, x shape, kernel shape, stride): each kind's shapes, valid for every form somewhere.
SITES = [
    ("conv", (2, 20, 24, 3), (9, 9, 3, 8), 1),
    ("conv", (1, 24, 28, 12), (9, 9, 12, 3), 1),
    ("conv", (1, 10, 12, 32), (3, 3, 32, 8), 1),
    ("conv", (1, 11, 13, 8), (3, 3, 8, 16), 2),
    ("same3x3", (1, 8, 10, 3), (3, 3, 3, 8), 1),
    ("same3x3", (2, 6, 8, 16), (3, 3, 16, 8), 1),
    ("upsample", (2, 5, 7, 6), (3, 3, 6, 4), 1),
    ("upsample", (1, 4, 6, 6), (3, 3, 6, 4), 1),  # (even: sub-pixel Winograd)
]


def _site(kind, x_shape, k_shape, stride, dtype="float32"):
    return autotune.Site(kind, x_shape, k_shape, stride, dtype)


def _inputs(x_shape, k_shape):
    kx, kk = jax.random.split(jax.random.PRNGKey(0))
    return jax.random.normal(kx, x_shape), jax.random.normal(kk, k_shape)


def _close(a, b, tol=1e-5):
    np.testing.assert_allclose(a, b, atol=tol * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize(("kind", "x_shape", "k_shape", "stride"), SITES)
def test_every_valid_form_matches_the_reference(kind, x_shape, k_shape, stride):
    site = _site(kind, x_shape, k_shape, stride)
    x, k = _inputs(x_shape, k_shape)

    def form(name):
        return lambda a, b: conv.FORMS[kind][name](a, b, stride)

    @functools.partial(jax.jit, static_argnums=0)
    def run(name, x, k, g):
        y, vjp = jax.vjp(form(name), x, k)
        return y, vjp(g)

    out_shape = jax.eval_shape(form(conv.REFERENCE[kind]), x, k).shape
    g = jax.random.normal(jax.random.PRNGKey(3), out_shape)
    ref_y, ref_grads = run(conv.REFERENCE[kind], x, k, g)
    forms = set(conv.valid_forms(site)) | set(conv.valid_forms(site, backward=True))
    assert len(forms) >= (2 if stride == 1 else 1)
    if kind == "upsample":
        assert "subpixel_xla" in forms
        assert ("subpixel_winograd" in forms) == (x_shape[1] % 2 == 0 and x_shape[2] % 2 == 0)
    for name in forms:
        y, grads = run(name, x, k, g)
        _close(y, ref_y)
        for a, b in zip(grads, ref_grads, strict=True):
            _close(a, b)


def test_site_keys_share_nearby_sizes_but_not_channels():
    a = _site("same3x3", (1, 256, 192, 64), (3, 3, 64, 64), 1)
    b = _site("same3x3", (1, 250, 190, 64), (3, 3, 64, 64), 1)
    c = _site("same3x3", (1, 512, 384, 64), (3, 3, 64, 64), 1)
    d = _site("same3x3", (1, 256, 192, 64), (3, 3, 64, 128), 1)
    assert a.key() == b.key()
    assert len({a.key(), c.key(), d.key()}) == 3


@pytest.fixture
def tuning(tmp_path, monkeypatch):
    """Tuning on, with a private $JAXSTYLE_HOME; fewer timed runs to keep the test short."""
    monkeypatch.setenv("JAXSTYLE_HOME", str(tmp_path))
    monkeypatch.setenv(autotune.ENV, "1")
    monkeypatch.setattr(autotune, "REPEATS", 1)
    autotune.reset()
    yield tmp_path
    autotune.reset()


def _small_net():
    """A layer of each kind: Johnson's 9x9 input layer, a stride-2 conv, an upsampling conv,
    and two VGG 3x3s (few and many input channels)."""

    def net(x, ks):
        y = jax.nn.relu(conv.conv2d(jnp.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0))), ks[0]))
        y = jax.nn.relu(conv.conv2d(y, ks[1], 2))
        y = conv.upsample_conv3x3(y, ks[2])
        z = jax.nn.relu(conv.conv3x3_same(y, ks[3]))
        return jnp.sum(conv.conv3x3_same(z, ks[4]) ** 2)

    shapes = [(9, 9, 3, 8), (3, 3, 8, 16), (3, 3, 16, 3), (3, 3, 3, 16), (3, 3, 16, 16)]
    keys = jax.random.split(jax.random.PRNGKey(1), len(shapes))
    ks = [
        jax.random.normal(k, s) / np.sqrt(np.prod(s[:3])) for k, s in zip(keys, shapes, strict=True)
    ]
    x = jax.random.uniform(jax.random.PRNGKey(2), (1, 16, 20, 3))
    return net, x, ks


def test_tuned_network_matches_xla_and_the_cache_is_reused(tuning, capfd):
    net, x, ks = _small_net()
    value_and_grad = jax.value_and_grad(net, argnums=(0, 1))
    v, (gx, gk) = jax.jit(value_and_grad)(x, ks)
    tuned = autotune.used()
    assert {r["site"].split()[0] for r in tuned} == {"conv", "upsample", "same3x3"}
    assert "jaxstyle: tuned" in capfd.readouterr().err
    path = autotune.cache_file()
    assert path.parent == tuning / "autotune"
    doc = json.loads(path.read_text())
    assert set(doc["machine"]) >= {"cpu", "cores", "jax", "jaxlib"}
    for entry in doc["sites"].values():
        for d in entry.values():
            assert d["ranking"] and d["ranking"] == sorted(d["ranking"], key=lambda r: r[1])

    with backend.conv_forms("xla"):
        v_ref, (gx_ref, gk_ref) = jax.value_and_grad(net, argnums=(0, 1))(x, ks)
    _close(v, v_ref, 1e-4)
    _close(gx, gx_ref, 1e-4)
    for a, b in zip(gk, gk_ref, strict=True):
        _close(a, b, 1e-4)

    # A new process (here: a forgotten in-memory cache, and a new trace) reads the file back
    # and measures nothing.
    mtime = path.stat().st_mtime_ns
    autotune.reset()
    v2 = jax.jit(lambda x, ks: value_and_grad(x, ks)[0])(x, ks)
    assert "jaxstyle: tuned" not in capfd.readouterr().err
    assert path.stat().st_mtime_ns == mtime
    assert [(r["forward"], r["backward"]) for r in autotune.used()] == [
        (r["forward"], r["backward"]) for r in tuned
    ]
    _close(v2, v, 1e-5)


def test_off_runs_the_fixed_rules_and_writes_nothing(tuning, monkeypatch, capfd):
    monkeypatch.setenv(autotune.ENV, "0")
    site = _site("conv", (1, 24, 24, 3), (9, 9, 3, 8), 1)
    assert autotune.forms(site) == conv.fixed_forms(site) == ("space_to_depth",) * 2
    net, x, ks = _small_net()
    jax.jit(net)(x, ks)
    assert "jaxstyle: tuned" not in capfd.readouterr().err
    assert not (tuning / "autotune").exists()
    assert autotune.used() == []


def test_a_damaged_cache_is_measured_again(tuning):
    path = autotune.cache_file()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    site = _site("same3x3", (1, 8, 8, 16), (3, 3, 16, 16), 1)
    fwd, bwd = autotune.forms(site)
    assert fwd in conv.valid_forms(site) and bwd in conv.valid_forms(site, backward=True)
    assert site.key() in json.loads(path.read_text())["sites"]


def test_forced_forms_and_symbolic_shapes_use_the_fixed_rules(tuning):
    site = _site("conv", (1, 10, 12, 32), (3, 3, 32, 8), 1)
    with backend.conv_forms("cpu"):
        assert not autotune.enabled()
        assert autotune.forms(site) == ("winograd", "xla")
    assert not (tuning / "autotune").exists()


def test_a_forward_only_program_times_no_backward_pass(tuning):
    x, k = _inputs((1, 12, 16, 8), (3, 3, 8, 16))
    jax.jit(conv.conv3x3_same)(x, k)
    (row,) = autotune.used()
    assert row["backward"] == "-" and row["forward"] in conv.FORMS["same3x3"]
    entry = json.loads(autotune.cache_file().read_text())["sites"][row["key"]]
    assert set(entry) == {"forward"}


def test_batches_add_per_image_forms_and_older_measurements_are_redone(tuning):
    """Where the batch is larger than one, every form also runs one image at a time (values
    and gradients are checked in ``test_every_valid_form_matches_the_reference``); a site
    measured before those forms existed is measured again, once."""
    one = _site("same3x3", (1, 8, 8, 16), (3, 3, 16, 16), 1)
    two = _site("same3x3", (2, 8, 8, 16), (3, 3, 16, 16), 1)
    assert not any(f.endswith(conv.PER_IMAGE) for f in conv.valid_forms(one))
    forms = conv.valid_forms(two)
    assert {f + conv.PER_IMAGE for f in conv.valid_forms(one)} <= set(forms)
    big = _site("same3x3", (conv.PER_IMAGE_MAX_BATCH + 1, 8, 8, 16), (3, 3, 16, 16), 1)
    assert not any(f.endswith(conv.PER_IMAGE) for f in conv.valid_forms(big))

    old = [f for f in forms if not f.endswith(conv.PER_IMAGE)]
    path = autotune.cache_file()
    path.parent.mkdir(parents=True)
    stale = {"ranking": [[f, 1.0] for f in old], "rejected": {}, "seconds": 0.0, "shape": ""}
    doc = {"machine": autotune.machine(), "sites": {two.key(): {"forward": stale}}}
    path.write_text(json.dumps(doc))
    autotune.choose(two, "forward")
    ranked = json.loads(path.read_text())["sites"][two.key()]["forward"]
    measured = {n for n, _ in ranked["ranking"]} | set(ranked["rejected"])
    assert measured == set(forms)
    mtime = path.stat().st_mtime_ns
    autotune.reset()
    autotune.choose(two, "forward")
    assert path.stat().st_mtime_ns == mtime
