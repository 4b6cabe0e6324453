"""Tiled feed-forward inference (jaxstyle.tiling), ``apply --mask`` and transparency kept.

Tiled outputs are compared with the whole image's for each model kind on sizes that are not
multiples of the tile (or of 4 and 8), with tiles small enough to give interior tile edges on
every side; a halo one step short of the receptive field must break that. Memory is checked on
the largest intermediate array of the tile programs (their shapes do not grow with the image).
Tiny Johnson networks; AdaIN's fixed architecture with random weights (vgg16 encoder).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from PIL import Image

import jaxstyle
from jaxstyle import cli, models, tiling
from jaxstyle import images as imlib
from jaxstyle.nets import adain
from jaxstyle.nets import transformer_net as tn

MULTI = dataclasses.replace(tn.TINY, num_styles=3)
#: The issue's tolerance for tiled against whole: max and mean absolute difference.
MAX_DIFF, MEAN_DIFF = 2 / 255, 0.3 / 255


def _random_params(config, seed=3):
    """Random parameters of the architecture (numpy draws over its shapes: no init compile),
    scaled like flax's initialisers, norm rows near gamma 1, beta 0 but varied."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: tn.init_params(config, jax.random.PRNGKey(0)))

    def draw(path, s):
        name = jax.tree_util.keystr(path)
        noise = rng.standard_normal(s.shape).astype(np.float32)
        if "kernel" in name:
            return noise / np.sqrt(np.prod(s.shape[:-1]))
        return (1.0 if "scale" in name else 0.0) + 0.2 * noise

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiling")
    rng = np.random.default_rng(0)
    out = {
        "johnson": models.save_model(
            d / "j.safetensors",
            _random_params(tn.TINY),
            tn.TINY,
            {"style": "x.png"},
        ),
        "multistyle": models.save_model(
            d / "m.safetensors",
            _random_params(MULTI, seed=4),
            MULTI,
            {"styles": '["a.png", "b.png", "c.png"]'},
        ),
    }
    rgba = (rng.random((52, 70, 4)) * 255).astype(np.uint8)
    rgba[..., 3] = np.linspace(0, 255, 70).astype(np.uint8)[None, :]  # a ramp of opacity
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    Image.fromarray((rng.random((9, 13)) * 255).astype(np.uint8)).save(d / "mask.png")
    Image.fromarray((rng.random((9, 13, 3)) * 255).astype(np.uint8)).save(d / "colour.png")
    (d / "notes.png").write_text("not a picture\n")
    out.update(dir=d, rgba=d / "rgba.png", rgba_pixels=rgba, mask=d / "mask.png")
    out.update(colour=d / "colour.png", text=d / "notes.png")
    return out


def _image(h, w, seed=0):
    """A smooth picture with texture (random noise alone has no structure to get wrong)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(5 * x + 2 * y), np.cos(3 * y - x), np.sin(7 * x * y)], -1)
    return np.clip(0.5 + 0.35 * base + 0.1 * rng.standard_normal((h, w, 3)), 0, 1).astype(
        np.float32
    )


def _close(got, want):
    d = np.abs(np.asarray(got, np.float64) - want)
    assert d.max() <= MAX_DIFF and d.mean() <= MEAN_DIFF, (d.max() * 255, d.mean() * 255)


# Sizes not divisible by the tile (nor by 4 or 8), each with several tiles a side.
SIZES = [(61, 90), (100, 77)]


@pytest.mark.parametrize("kind", ["johnson", "multistyle"])
def test_tiled_johnson_equals_whole(files, kind):
    _, params, config, _ = models.load_model(files[kind])
    style = tn.style_vector(3, None, [1, 0, 2]) if kind == "multistyle" else None
    for h, w in SIZES:
        image = _image(h, w)
        want = np.asarray(tn.stylize(params, image[None], config, style=style))[0]
        # The smallest tiles (56 px): 2 x 2, the last ones overhanging the image.
        plan = tiling.plan(kind, config, (h, w), 2**30, tile=56, batch_size=4)
        assert len(tiling._windows((h, w), plan.geometry)) == 4
        got = tiling.apply_johnson(params, config, image, plan, style=style, programs="one")
        _close(got, want)


def test_per_layer_programs_and_the_halo():
    """The per-layer programs (the default for large images) give the same output; a halo
    one step short of the receptive field does not (the comparison can fail). A network
    without residual blocks: fewer programs to compile."""
    small = dataclasses.replace(tn.TINY, num_res=0)
    params = _random_params(small, seed=6)
    h, w = SIZES[0]
    image = _image(h, w, seed=2)
    want = np.asarray(tn.stylize(params, image[None], small))[0]
    plan = tiling.plan("johnson", small, (h, w), 2**30, tile=24, batch_size=4)
    _close(tiling.apply_johnson(params, small, image, plan, programs="per-layer"), want)
    short = dataclasses.replace(plan.geometry, halo=plan.geometry.halo - 8)
    bad = tiling.apply_johnson(params, small, image, tiling.Plan(short, plan.batch), programs="one")
    assert np.abs(bad - want).max() > MAX_DIFF


def _thin_adain(seed=0, shrink=16):
    """AdaIN parameters in the vgg16 layout with 1/16 of the channels: the same layers, pooling
    and upsampling (what tiling depends on) at a fraction of the work."""
    rng = np.random.default_rng(seed)
    out = {}
    for part, layers in adain.param_shapes("vgg16").items():
        out[part] = {}
        for name, s in layers.items():
            k, _, cin, cout = s["kernel"]
            cin = cin if cin == 3 else cin // shrink
            cout = cout if cout == 3 else cout // shrink
            kernel = rng.standard_normal((k, k, cin, cout)) * np.sqrt(2.0 / (k * k * cin))
            out[part][name] = {
                "kernel": jax.numpy.asarray(kernel, np.float32),
                "bias": jax.numpy.asarray(0.1 * rng.standard_normal(cout), np.float32),
            }
    return out


def test_tiled_adain_equals_whole():
    params = _thin_adain()
    style = _image(40, 40, seed=5)[::-1]
    mean, std = adain.weighted_stats(params, [style])
    for h, w in [(100, 150), (151, 97)]:  # the smallest tiles (144 px): two windows
        image = _image(h, w, seed=1)
        want = np.asarray(adain.stylize_with_stats(params, image[None], mean, std, 0.7))[0]
        plan = tiling.plan("adain", None, (h, w), 2**31, tile=144, batch_size=2)
        assert len(tiling._windows((h, w), plan.geometry)) == 2
        _close(tiling.apply_adain(params, image, mean, std, 0.7, plan), want)
    # Through Model (the same programs), with a mask whose black shows another style: the
    # whole runs blended.
    model = jaxstyle.Model(kind="adain", params=params, config=None, metadata={}, name="thin")
    image, other = _image(100, 150, seed=3), _image(24, 24, seed=4)
    opts = {"style_size": 0, "alpha": 0.7, "batch_size": 2}
    mask = np.tile(np.linspace(0, 1, 150, dtype=np.float32), (100, 1))
    whole = [model(image, styles=s, tile=0, **opts) for s in (style, other)]
    got = model(image, styles=style, tile=144, mask=mask, mask_style=other, **opts)
    _close(got, mask[..., None] * whole[0] + (1 - mask[..., None]) * whole[1])


def test_model_tiles_what_does_not_fit(files):
    """Model: tiled on request (the same output); by default only images over max_memory,
    the others batched as many as fit; tile=0 refuses what does not fit."""
    from jaxstyle import api

    model = jaxstyle.load_model(files["johnson"])
    image = _image(100, 77)
    _close(model(image, tile=56, batch_size=4), model(image, tile=0))
    # Whole, 200x150 pads to 256x192: 69 MB; a 24 MB limit tiles it (56 px tiles, the most
    # that fit), while 40x40 images (64x64 padded, 5.7 MB) run whole, 4 a batch (not 8).
    big, small = _image(200, 150), _image(40, 40)
    req = api.check_apply("johnson", "m", [big, small, small], max_memory="24MB", config=tn.TINY)
    assert req.plans[0].geometry.tile == 56 and req.plans[1:] == (None, None)
    assert req.batch_size == 4
    with pytest.raises(ValueError, match="in batches of 1 needs about"):
        model(big, max_memory="24MB", tile=0)
    with pytest.raises(ValueError, match="even tiled"):
        model(big, max_memory="1MiB")


def test_memory_is_bounded_by_the_tile():
    """A 6000x4000 photo through the full network with the default limit: the programs see
    windows only (the same shapes for a 12000x8000 photo with that tile), and the largest
    intermediate array of the output program stays inside the plan's per-window estimate, a
    small fraction of the whole image's (measured the same way, from the traced programs)."""
    limit = tiling.DEFAULT_MAX_MEMORY
    big = tiling.plan("johnson", tn.FULL, (4000, 6000), limit)
    g = big.geometry
    assert g.tile >= 512 and big.batch >= 1
    huge = tiling.plan("johnson", tn.FULL, (8000, 12000), 4 * limit, g.tile, big.batch)
    assert (huge.geometry, huge.batch) == (g, big.batch)
    fn = tiling._johnson_program(tn.FULL, g, None)
    params = jax.eval_shape(lambda: tn.init_params(tn.FULL, jax.random.PRNGKey(0)))
    x = jax.ShapeDtypeStruct((big.batch, g.window, g.window, 3), np.float32)
    origin = jax.ShapeDtypeStruct((big.batch, 2), np.int32)
    extent = jax.ShapeDtypeStruct((2,), np.int32)
    stats = tuple(
        (jax.ShapeDtypeStruct((c,), np.float32),) * 2 for c in tiling._norm_channels(tn.FULL)
    )
    largest = tiling.largest_intermediate(fn, params, x, origin, extent, stats, None)
    per_window = tiling.BYTES_PER_WINDOW_PIXEL["johnson"] * g.window**2 * big.batch
    # float32. The largest is the 9x9 output convolution's 243 tap planes (972 B a pixel),
    # inside the plan's per-window figure (measured peak of the whole program, 1,294 B).
    assert 4 * largest <= per_window
    whole = tiling.largest_intermediate(
        lambda p, x: tn.stylize(p, x, tn.FULL),
        params,
        jax.ShapeDtypeStruct((1, 4000, 6000, 3), np.float32),
    )
    assert 4 * whole > 10 * limit and largest < whole / 20


def test_mask_blends_with_the_content_or_another_style(files):
    model = jaxstyle.load_model(files["johnson"])
    image = _image(40, 56)
    mask = np.zeros((40, 56), np.float32)
    mask[:, 28:] = 1.0
    mask[:20, :] = 0.25
    styled = model(image)
    got = model(image, mask=mask)
    np.testing.assert_allclose(
        got, mask[..., None] * styled + (1 - mask[..., None]) * image, atol=1e-6
    )
    multi = jaxstyle.load_model(files["multistyle"])
    a, b = multi(image, style_index=0), multi(image, style_index=2)
    got = multi(image, style_index=0, mask=mask, mask_style_index=2)
    np.testing.assert_allclose(got, mask[..., None] * a + (1 - mask[..., None]) * b, atol=1e-5)
    # A mask file is resized to each image.
    m = imlib.resize(inference_mask(files["mask"])[..., None], 40, 56)[..., 0]
    np.testing.assert_allclose(
        model(image, mask=files["mask"]),
        m[..., None] * styled + (1 - m[..., None]) * image,
        atol=1e-6,
    )


def inference_mask(path):
    from jaxstyle.inference import load_mask

    return load_mask(path)


def test_rgba_in_rgba_out(files, tmp_path, capsys):
    alpha = files["rgba_pixels"][..., 3]
    out = tmp_path / "out.png"
    assert cli.main(["apply", str(files["johnson"]), str(files["rgba"]), "-o", str(out), "-q"]) == 0
    written = Image.open(out)
    assert written.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(written)[..., 3], alpha)
    # The network saw the image over white: the RGB equals the composited input's output.
    model = jaxstyle.load_model(files["johnson"])
    want = model(imlib.load_image(files["rgba"]))
    np.testing.assert_allclose(np.asarray(written)[..., :3] / 255.0, want, atol=1 / 255 + 1e-6)
    # An RGBA array in, an RGBA array out with the same alpha.
    arr = files["rgba_pixels"].astype(np.float32) / 255.0
    got = model(arr)
    assert got.shape == (52, 70, 4)
    np.testing.assert_array_equal(got[..., 3], arr[..., 3])
    # JPEG cannot keep it: one warning line, the RGB written.
    jpg = tmp_path / "out.jpg"
    assert cli.main(["apply", str(files["johnson"]), str(files["rgba"]), "-o", str(jpg)]) == 0
    warnings = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and "transparency is dropped" in warnings[0]
    assert Image.open(jpg).mode == "RGB"


BAD = {
    "tile_too_small": (["--tile", "8"], "--tile 8: tiles must be at least 56 px"),
    "tile_negative": (["--tile", "-1"], "--tile -1: tiles must be at least"),
    "max_memory": (["--max-memory", "lots"], "--max-memory: not a memory size: 'lots'"),
    "mask_missing": (["--mask", "{dir}/none.png"], "mask {dir}/none.png: no such file"),
    "mask_text": (["--mask", "{text}"], "not an image file"),
    "mask_colour": (["--mask", "{colour}"], "a colour (RGB) image; a mask is grayscale"),
    "mask_style_alone": (["--mask-style-index", "1"], "--mask-style-index goes with --mask"),
    "mask_index_johnson": (
        ["--mask", "{mask}", "--mask-style-index", "1"],
        "--mask-style-index is for multi-style networks",
    ),
    "mask_style_johnson": (["--mask", "{mask}", "--mask-style", "{mask}"], "is for AdaIN"),
    "over_memory_untiled": (["--tile", "0", "--max-memory", "1MiB"], "in batches of 1 needs"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_writes_nothing(files, tmp_path, capsys, case):
    flags, fragment = BAD[case]
    names = {k: str(files[k]) for k in ("mask", "text", "colour")} | {"dir": str(files["dir"])}
    flags = [f.format(**names) for f in flags]
    fragment = fragment.format(**names)
    out = tmp_path / "out.png"
    argv = ["apply", str(files["johnson"]), str(files["rgba"]), "-o", str(out), *flags]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and fragment in err, err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_parse_bytes():
    assert tiling.parse_bytes("2GiB") == 2 << 30
    assert tiling.parse_bytes("1500") == 1500 << 20
    assert tiling.parse_bytes("800MB") == 800_000_000
    for bad in ("", "2 GiBs", "-1", "0", "nan"):
        with pytest.raises(ValueError):
            tiling.parse_bytes(bad)
