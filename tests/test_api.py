"""The Python API (jaxstyle.api): ``jaxstyle.stylize`` on arrays and paths, its callback, its
errors (exceptions, never SystemExit, raised before any work), ``jaxstyle.load_model`` for each
model kind and its equality with :mod:`jaxstyle.inference`, and the README's example.

``stylize`` runs on a random VGG16 written through the real writer (the mechanics do not depend
on its weights) at 32-64 px and 2-3 iterations; the models are tiny or random.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import REPO, offline_env

import jaxstyle
from jaxstyle import demo, inference, models
from jaxstyle import images as imlib
from jaxstyle.images import ImageError
from jaxstyle.weights import WeightsError


def test_import_is_cheap_and_exports_the_api():
    code = (
        "import sys, jaxstyle\n"
        "assert 'jax' not in sys.modules and 'jaxstyle.api' not in sys.modules\n"
        "from jaxstyle import api\n"
        "assert jaxstyle.stylize is api.stylize and jaxstyle.load_model is api.load_model\n"
        "assert jaxstyle.Model is api.Model and 'jax' not in sys.modules\n"
        "assert {'stylize', 'load_model', 'Model'} <= set(dir(jaxstyle))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        jaxstyle.nope  # noqa: B018


# ---------------------------------------------------------------------------------------------
# stylize.


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    from jaxstyle import weights as jw
    from jaxstyle.nets import vgg

    path = tmp_path_factory.mktemp("weights") / "random-vgg16.safetensors"
    jw.save(path, vgg.init_params("vgg16"), {"arch": "vgg16", "convention": "caffe"})
    return path


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict:
    """A 64x48 content as uint8, the style as float, both also as PNG files."""
    d = tmp_path_factory.mktemp("pictures")
    content = np.round(demo.draw_landscape(64, 48) * 255).astype(np.uint8)
    style = demo.draw_style(64)
    files = {
        "content_png": imlib.save_image(d / "land.png", content / 255.0),
        "style_png": imlib.save_image(d / "strokes.png", style),
    }
    text = d / "notes.jpg"
    text.write_text("not a picture\n")
    return {"content": content, "style": style, "text": text, **files}


SMALL = {"size": 64, "iterations": 2}


def test_stylize_arrays_and_paths(vgg_file, pictures):
    c8 = pictures["content"]
    from_uint8 = jaxstyle.stylize(c8, pictures["style"], weights=vgg_file, **SMALL)
    assert from_uint8.shape == (48, 64, 3) and from_uint8.dtype == np.float32
    assert from_uint8.min() >= 0.0 and from_uint8.max() <= 1.0
    # The same pixels as float in [0, 1], and as files (lossless PNG): the same run.
    c_float = c8.astype(np.float32) / 255
    from_float = jaxstyle.stylize(c_float, pictures["style"], weights=vgg_file, **SMALL)
    np.testing.assert_array_equal(from_float, from_uint8)
    style_from_file = imlib.load_image(pictures["style_png"])
    from_files = jaxstyle.stylize(
        str(pictures["content_png"]), pictures["style_png"], weights=str(vgg_file), **SMALL
    )
    want = jaxstyle.stylize(c8, style_from_file, weights=vgg_file, **SMALL)
    np.testing.assert_array_equal(from_files, want)
    # The output moved away from the content: the optimisation ran.
    assert np.abs(from_uint8 - c8 / 255).max() > 1e-3
    # Several styles (a list, paths and arrays mixed) with blend weights, options as sequences.
    blended = jaxstyle.stylize(
        c8,
        [pictures["style_png"], pictures["style"][::-1]],
        weights=vgg_file,
        style_blend_weights=[3, 1],
        style_layers="relu1_1,relu2_1",
        **SMALL,
    )
    assert blended.shape == (48, 64, 3)
    assert np.abs(blended - from_uint8).max() > 1e-4


def test_callback(vgg_file, pictures):
    calls = []

    def callback(iteration, losses, image):
        calls.append((iteration, dict(losses), image.copy()))

    common = dict(weights=vgg_file, scales=(32, 64), iterations=3)
    out = jaxstyle.stylize(
        pictures["content"], pictures["style"], callback=callback, callback_every=2, **common
    )
    # Every 2 iterations counted over both scales, and at each scale's last iteration.
    assert [c[0] for c in calls] == [2, 3, 4, 6]
    for iteration, losses, image in calls:
        scale = 32 if iteration <= 3 else 64
        assert losses["scale"] == scale
        assert set(losses) == {"scale", "total", "content", "style", "tv", "function_evaluations"}
        assert image.shape == ((24, 32, 3) if scale == 32 else (48, 64, 3))
        assert image.dtype == np.float32 and np.isfinite(losses["total"])
    # The last image is the result; the callback does not change the run.
    np.testing.assert_array_equal(calls[-1][2], out)
    np.testing.assert_array_equal(
        jaxstyle.stylize(pictures["content"], pictures["style"], **common), out
    )
    # Every iteration by default.
    seen = []
    jaxstyle.stylize(
        pictures["content"], pictures["style"], weights=vgg_file, size=32, iterations=3,
        callback=lambda i, losses, im: seen.append((i, losses["total"], im.shape)),
    )  # fmt: skip
    assert [s[0] for s in seen] == [1, 2, 3] and all(s[2] == (24, 32, 3) for s in seen)


def test_unknown_keyword_is_a_type_error(pictures):
    with pytest.raises(TypeError) as e:
        jaxstyle.stylize(pictures["content"], pictures["style"], sise=64, style_wieght=1.0)
    message = str(e.value)
    assert "sise" in message and "style_wieght" in message
    for valid in ("size", "style_weight", "weights", "callback", "preserve_colors"):
        assert valid in message
    with pytest.raises(TypeError, match="size: expected an int"):
        jaxstyle.stylize(pictures["content"], pictures["style"], size="64")


# case -> (content, style, options, exception, fragments); "{...}" names a `pictures` entry.
BAD_STYLIZE = {
    "missing_content": ("missing.png", "{style}", {}, ImageError, ["missing.png", "no such"]),
    "text_style": ("{content}", "{text}", {}, ImageError, ["notes.jpg", "not an image"]),
    "gray_array": ("gray", "{style}", {}, ValueError, ["content", "H x W x 3", "(48, 64)"]),
    "floats_in_0_255": ("f255", "{style}", {}, ValueError, ["content", "[0, 1]", "uint8"]),
    "nan_pixels": ("nan", "{style}", {}, ValueError, ["content", "not finite"]),
    "int_dtype": ("int64", "{style}", {}, ValueError, ["dtype int64"]),
    "nan_style_weight": ("{content}", "{style}", {"style_weight": float("nan")}, ValueError,
                         ["--style-weight", "not a finite number"]),
    "size_too_small": ("{content}", "{style}", {"size": 16}, ValueError, ["at least 32"]),
    "elongated": ("strip", "{style}", {}, ValueError, ["content", "64x3", "at least 16 px"]),
    "beyond_memory": ("{content}", "{style}", {"size": 200000}, ValueError, ["GiB"]),
    "blend_count": ("{content}", "{style}", {"style_blend_weights": (1, 2)}, ValueError,
                    ["2 values for 1 style"]),
    "bad_layer": ("{content}", "{style}", {"content_layers": "relu9_9"}, ValueError, ["relu9_9"]),
    "bad_choice": ("{content}", "{style}", {"preserve_colors": "lab"}, ValueError,
                   ["preserve_colors", "lab", "luminance"]),
    "missing_init": ("{content}", "{style}", {"init": "nope_init.png"}, ImageError,
                     ["nope_init.png", "no such file"]),
    "callback_every": ("{content}", "{style}", {"callback_every": 0}, ValueError,
                       ["callback_every"]),
    "missing_weights": ("{content}", "{style}", {"weights": "nope.safetensors"}, WeightsError,
                        ["nope.safetensors"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_STYLIZE))
def test_stylize_errors_are_exceptions_before_any_work(pictures, monkeypatch, case):
    from jaxstyle import gatys
    from jaxstyle import weights as jw

    content, style, options, exc, fragments = BAD_STYLIZE[case]
    arrays = {
        "gray": pictures["content"][..., 0],
        "f255": pictures["content"].astype(np.float32),
        "nan": np.full((48, 64, 3), np.nan, np.float32),
        "int64": pictures["content"].astype(np.int64),
        "strip": np.full((8, 200, 3), 0.5, np.float32),
    }

    def resolve(x):
        if x in arrays:
            return arrays[x]
        m = re.fullmatch(r"\{(\w+)\}", x)
        return pictures[m.group(1)] if m else x

    def no_work(*a, **k):
        raise AssertionError("the run started before the error was found")

    monkeypatch.setattr(gatys, "stylize", no_work)
    if case != "missing_weights":
        monkeypatch.setattr(jw, "load_vgg", no_work)
    options = {"size": 64, "iterations": 2, **options}
    with pytest.raises(exc) as e:  # an exception, not SystemExit
        jaxstyle.stylize(resolve(content), resolve(style), **options)
    for fragment in fragments:
        assert fragment in str(e.value), (fragment, str(e.value))


def test_a_run_that_ends_badly_warns(vgg_file, pictures, monkeypatch):
    import jax.numpy as jnp

    from jaxstyle import gatys

    def never_finite(x, *args):
        total = jnp.sum(x) * jnp.nan
        return total, {"total": total, "content": total, "style": total, "tv": total}

    real = gatys.stylize
    monkeypatch.setattr(gatys, "stylize", lambda *a, **k: real(*a, objective=never_finite, **k))
    with pytest.warns(RuntimeWarning, match="not finite"):
        out = jaxstyle.stylize(
            pictures["content"], pictures["style"], weights=vgg_file, size=32, iterations=2
        )
    assert out.shape == (24, 32, 3) and np.isfinite(out).all()


# ---------------------------------------------------------------------------------------------
# load_model and Model.


def _perturbed(params, seed=1):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda a: np.asarray(a) + 0.2 * rng.standard_normal(a.shape).astype(np.float32), params
    )


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    """A tiny johnson network, a tiny 3-style network and a random AdaIN model, as files."""
    import dataclasses

    from jaxstyle.nets import adain
    from jaxstyle.nets import transformer_net as tn

    d = tmp_path_factory.mktemp("models")
    multi = dataclasses.replace(tn.TINY, num_styles=3)
    styles = json.dumps(["s/a.png", "s/b.png", "s/c.png"])
    return {
        "johnson": models.save_model(
            d / "j.safetensors",
            _perturbed(tn.init_params(tn.TINY, jax.random.PRNGKey(0))),
            tn.TINY,
            {"style": "paintings/candy.jpg"},
        ),
        "multistyle": models.save_model(
            d / "m.safetensors",
            _perturbed(tn.init_params(multi, jax.random.PRNGKey(1))),
            multi,
            {"styles": styles},
        ),
        "adain": models.save_adain_model(d / "a.safetensors", adain.init_params(0)),
    }


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((h, w, 3)).astype(np.float32) for h, w in ((36, 44), (48, 64), (30, 30))]


def test_load_model_kinds(model_files):
    j = jaxstyle.load_model(model_files["johnson"])
    assert isinstance(j, jaxstyle.Model) and j.kind == "johnson"
    assert j.style_names == ["candy.jpg"] and j.config.num_styles == 1
    assert j.metadata["kind"] == "johnson" and j.name == str(model_files["johnson"])
    m = jaxstyle.load_model(str(model_files["multistyle"]))
    assert m.kind == "multistyle" and m.style_names == ["a.png", "b.png", "c.png"]
    assert m.config.num_styles == 3
    a = jaxstyle.load_model(model_files["adain"])
    assert a.kind == "adain" and a.config is None and a.style_names == []
    assert a.metadata["encoder"] == "vgg19"
    assert "params" not in repr(a)  # the repr does not print the tensors
    with pytest.raises(models.ModelError, match="no such file"):
        jaxstyle.load_model(model_files["johnson"].parent / "nope.safetensors")


def test_johnson_model_equals_apply_images(model_files, tmp_path):
    kind, params, config, _ = models.load_model(model_files["johnson"])
    model = jaxstyle.load_model(model_files["johnson"])
    images = _images()
    want = inference.apply_images(params, config, images, batch_size=2, bucket=16)
    got = model(images, batch_size=2, bucket=16)
    assert isinstance(got, list) and len(got) == 3
    for g, w, x in zip(got, want, images, strict=True):
        assert g.shape == x.shape and g.dtype == np.float32
        np.testing.assert_array_equal(g, w)
    # One image in, one out (the network applied to it alone, up to float rounding).
    one = model(images[1])
    assert one.shape == (48, 64, 3)
    np.testing.assert_allclose(one, want[1], atol=1e-5)
    # A batch array in, a batch array out.
    batch = np.stack([images[1], images[1][::-1]])
    out = model(batch)
    assert isinstance(out, np.ndarray) and out.shape == (2, 48, 64, 3)
    np.testing.assert_allclose(out[0], want[1], atol=1e-5)
    # uint8 and paths: the same pixels, the same output.
    u8 = np.round(images[1] * 255).astype(np.uint8)
    path = imlib.save_image(tmp_path / "x.png", u8 / 255.0)
    from_u8, from_path = model([u8, path])
    np.testing.assert_array_equal(from_u8, from_path)
    np.testing.assert_allclose(from_u8, model(u8.astype(np.float32) / 255), atol=1e-6)
    # Colour preservation as apply's.
    kept = model(images[0], preserve_colors="luminance")
    np.testing.assert_allclose(
        kept, inference.keep_colors(want[0], images[0], "luminance"), atol=1e-5
    )
    # on_done: outputs handed over as they finish, none kept.
    done = {}
    assert model(images, on_done=lambda i, y: done.__setitem__(i, y)) is None
    assert sorted(done) == [0, 1, 2]
    np.testing.assert_allclose(done[2], want[2], atol=1e-5)


def test_multistyle_model_equals_apply_images(model_files):
    from jaxstyle.nets.transformer_net import style_vector

    _, params, config, _ = models.load_model(model_files["multistyle"])
    model = jaxstyle.load_model(model_files["multistyle"])
    images = _images(1)
    for kw, style in (
        ({"style_index": 2}, style_vector(3, 2)),
        ({"style_mix": [1, 0, 3]}, style_vector(3, None, [1, 0, 3])),
    ):
        want = inference.apply_images(params, config, images, style=style)
        for g, w in zip(model(images, **kw), want, strict=True):
            np.testing.assert_array_equal(g, w)
    assert np.abs(model(images[0], style_index=0) - model(images[0], style_index=1)).max() > 0


def test_adain_model_equals_apply_adain(model_files, tmp_path):
    _, params, _, _ = models.load_model(model_files["adain"])
    model = jaxstyle.load_model(model_files["adain"])
    content = _images(2)[1]
    rng = np.random.default_rng(5)
    styles = [
        rng.random((40, 40, 3)).astype(np.float32),
        rng.random((32, 48, 3)).astype(np.float32),
    ]
    got = model(content, styles=styles, style_weights=[1, 3], alpha=0.7, style_size=0)
    want = inference.apply_adain(params, [content], styles, alpha=0.7, style_weights=[1, 3])[0]
    np.testing.assert_array_equal(got, want)
    # A style file, at the default style size (512: enlarged, as apply loads it).
    path = imlib.save_image(tmp_path / "s.png", styles[0])
    want = inference.apply_adain(params, [content], [inference.load_style(path, 512)])[0]
    np.testing.assert_array_equal(model(content, styles=path), want)
    hist = model([content], styles=styles[:1], style_size=0, preserve_colors="histogram")[0]
    want = inference.apply_adain(params, [content], styles[:1], preserve_colors="histogram")[0]
    np.testing.assert_array_equal(hist, want)


BAD_MODEL = {
    "index_on_johnson": ("johnson", {"style_index": 0}, "style_index is for multi-style"),
    "mix_on_adain": ("adain", {"style_mix": [1], "styles": "S"}, "style_mix is for multi-style"),
    "alpha_on_johnson": ("johnson", {"alpha": 0.5}, "alpha is for AdaIN models"),
    "styles_on_multi": ("multistyle", {"style_index": 0, "styles": "S"}, "styles is for AdaIN"),
    "neither": ("multistyle", {}, "give style_index or style_mix"),
    "both": ("multistyle", {"style_index": 0, "style_mix": [1, 0, 0]}, "style_index or"),
    "index_range": ("multistyle", {"style_index": 3}, "out of range 0..2; "),
    "mix_length": ("multistyle", {"style_mix": [1, 2]}, "a mix of 2 weights"),
    "no_styles": ("adain", {}, "is an AdaIN model: give style images with styles"),
    "alpha_range": ("adain", {"styles": "S", "alpha": 1.5}, "alpha must be in [0, 1]"),
    "weights_count": ("adain", {"styles": "S", "style_weights": [1, 2]}, "2 values for 1 style"),
    "weights_sign": ("adain", {"styles": "S", "style_weights": [-1]}, "must be finite, >= 0"),
    "style_size": ("adain", {"styles": "S", "style_size": -1}, "style_size must be >= 0"),
    "batch_size": ("johnson", {"batch_size": 0}, "batch_size must be >= 1"),
    "bucket": ("johnson", {"bucket": 0}, "bucket must be >= 1"),
    "preserve": ("johnson", {"preserve_colors": "lab"}, "preserve_colors must be one of"),
    "two_channels": ("johnson", {"images": np.zeros((2, 40, 40, 2))}, "image 0: expected an H"),
    "gray": ("johnson", {"images": np.zeros((40, 40))}, "image: expected an H x W x 3"),
    "too_small": ("adain", {"styles": "S", "images": np.zeros((8, 8, 3))}, "image: 8x8"),
    "beyond_memory": ("johnson", {"tile": 0}, "in batches of 1 needs about"),  # 1 MiB budget
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_MODEL))
def test_model_refuses_options_that_do_not_fit(model_files, monkeypatch, case):
    kind, kw, fragment = BAD_MODEL[case]
    model = jaxstyle.load_model(model_files[kind])
    style = np.full((32, 32, 3), 0.5, np.float32)
    kw = {k: (style if isinstance(v, str) and v == "S" else v) for k, v in kw.items()}
    images = kw.pop("images", _images()[0])

    def no_work(*a, **k):
        raise AssertionError("the network ran before the error was found")

    if case == "beyond_memory":
        from jaxstyle import backend

        monkeypatch.setattr(backend, "memory_budget", lambda: 2**20)
    if case not in ("index_range", "mix_length"):  # these need the model's rows
        monkeypatch.setattr(inference, "apply_images", no_work)
    monkeypatch.setattr(inference, "apply_adain", no_work)
    with pytest.raises(ValueError) as e:
        model(images, **kw)
    message = str(e.value)
    assert fragment in message and "\n" not in message, message
    if case == "index_range":
        assert "0 a.png, 1 b.png, 2 c.png" in message


def test_model_bad_image_file(model_files, pictures):
    model = jaxstyle.load_model(model_files["johnson"])
    with pytest.raises(ImageError, match="notes.jpg"):
        model([_images()[0], pictures["text"]])
    with pytest.raises(ImageError, match="missing.png"):
        model("missing.png")


# ---------------------------------------------------------------------------------------------
# README.


def readme_example() -> str:
    """The first python code block under README's "## Python API" heading."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs(vgg16_path, tmp_path):
    # As a user runs it: a fresh process, the cached real VGG16, no network. The example
    # itself is small (128 px, 20 iterations), about half a minute on two CPU cores.
    home = tmp_path / "home"
    (home / "weights").mkdir(parents=True)
    (home / "weights" / vgg16_path.name).symlink_to(vgg16_path)
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    r = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=offline_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "float32" in r.stdout, r.stdout
