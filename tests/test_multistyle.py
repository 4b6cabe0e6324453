"""Multi-style networks (conditional instance norm, Dumoulin et al. 2017): the style rows, mixing,
training several styles, resume, fine-tuning new styles, export and ``apply``'s flags.

Tiny network, 32 px crops, random VGG16 (the mechanics do not depend on its weights).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

# Fixtures shared with the single-style training tests.
from test_train import cli_env, cli_main, data_dir, read_metrics, tiny_config, vgg  # noqa: F401

from jaxstyle import inference, models, train
from jaxstyle.nets import transformer_net as tn

MULTI = dataclasses.replace(tn.TINY, num_styles=3)


def perturbed(params, seed=1):
    """Parameters whose style rows differ (fresh ones all start at gamma 1, beta 0)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda a: a + 0.2 * rng.standard_normal(a.shape).astype(np.float32), params
    )


def row(params, k):
    """The single-style network of style row ``k``."""
    return _unflat({p: (v[k] if train._is_style_row(p) else v) for p, v in _flat(params).items()})


def _flat(params):
    from flax import traverse_util

    return traverse_util.flatten_dict(params)


def _unflat(flat):
    from flax import traverse_util

    return traverse_util.unflatten_dict(flat)


@pytest.fixture(scope="module")
def multi_params():
    return perturbed(tn.init_params(MULTI, jax.random.PRNGKey(0)))


@pytest.fixture(scope="module")
def styles(tmp_path_factory) -> list[Path]:
    """Three distinct style images: stripes, blobs, the demo painting."""
    from jaxstyle.demo import draw_style

    root = tmp_path_factory.mktemp("styles")
    yy, xx = np.mgrid[:64, :64] / 64.0
    stripes = np.stack([np.sin(xx * 40) * 0.5 + 0.5, xx, 1 - xx], -1)
    blobs = np.stack([np.cos(yy * 9) ** 2, np.sin(xx * 7) ** 2, yy * 0 + 0.3], -1)
    images = {"stripes": stripes, "blobs": blobs, "demo": draw_style(64)}
    paths = []
    for name, img in images.items():
        paths.append(root / f"{name}.png")
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(paths[-1])
    return paths


def test_style_index_is_that_rows_single_style_network(multi_params):
    x = jnp.asarray(np.random.default_rng(0).random((2, 28, 36, 3)), jnp.float32)
    for k in range(3):
        y = tn.stylize(multi_params, x, MULTI, style=tn.style_vector(3, index=k))
        alone = tn.stylize(row(multi_params, k), x, tn.TINY)
        np.testing.assert_allclose(np.asarray(y), np.asarray(alone), atol=1e-6)
    ys = [tn.stylize(multi_params, x, MULTI, style=tn.style_vector(3, index=k)) for k in range(3)]
    assert float(jnp.abs(ys[0] - ys[1]).max()) > 0.01  # the rows are different styles


def test_mix_blends_rows(multi_params):
    x = jnp.asarray(np.random.default_rng(1).random((1, 32, 32, 3)), jnp.float32)
    one = tn.stylize(multi_params, x, MULTI, style=tn.style_vector(3, index=0))
    mixed = tn.stylize(multi_params, x, MULTI, style=tn.style_vector(3, mix=[1, 0, 0]))
    np.testing.assert_array_equal(np.asarray(one), np.asarray(mixed))
    # (0.2, 0.8) is the network whose rows are 0.2 * row 0 + 0.8 * row 1; weights normalised.
    blend = _unflat(
        {
            p: (0.2 * v[0] + 0.8 * v[1] if train._is_style_row(p) else v)
            for p, v in _flat(multi_params).items()
        }
    )
    y = tn.stylize(multi_params, x, MULTI, style=tn.style_vector(3, mix=[1, 4, 0]))
    np.testing.assert_allclose(np.asarray(y), np.asarray(tn.stylize(blend, x, tn.TINY)), atol=1e-5)


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"index": 3}, "out of range"),
        ({"index": -1}, "out of range"),
        ({"mix": [1, 2]}, "a mix of 2 weights"),
        ({"mix": [1, -1, 1]}, ">= 0"),
        ({"mix": [0, 0, 0]}, "not all 0"),
        ({"mix": [1, float("nan"), 0]}, "finite"),
        ({}, "needs a style index or a mix"),
        ({"index": 0, "mix": [1, 0, 0]}, "needs a style index or a mix"),
    ],
)
def test_style_vector_errors(kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        tn.style_vector(3, **kw)


def test_apply_is_exact_for_multistyle(multi_params):
    rng = np.random.default_rng(2)
    images = [rng.random(s + (3,)).astype(np.float32) for s in [(37, 50), (64, 64), (20, 29)]]
    style = tn.style_vector(3, mix=[0.3, 0.7, 0])
    outs = inference.apply_images(multi_params, MULTI, images, batch_size=2, bucket=64, style=style)
    for img, out in zip(images, outs, strict=True):
        alone = tn.stylize(multi_params, jnp.asarray(img)[None], MULTI, style=style)[0]
        assert out.shape == img.shape
        assert np.abs(out - np.asarray(alone)).max() <= 1 / 255 * 0.1


def test_multistyle_trains_resumes_and_finetunes(vgg, data_dir, styles, tmp_path):  # noqa: F811
    cfg = tiny_config(data_dir, steps=6, checkpoint_every=3, preview_every=6, lr=3e-2)
    paths = [str(p) for p in styles[:2]]
    whole = tmp_path / "whole"
    train.train_and_evaluate(cfg, whole, paths, vgg, progress=False)
    parts = tmp_path / "parts"
    train.train_and_evaluate(dataclasses.replace(cfg, steps=4), parts, paths, vgg, progress=False)
    train.train_and_evaluate(cfg, parts, paths, vgg, progress=False)
    a, b = read_metrics(whole), read_metrics(parts)
    assert [r["step"] for r in b] == list(range(1, 7))
    for ra, rb in zip(a, b, strict=True):
        assert ra["total"] == pytest.approx(rb["total"], rel=1e-6), ra["step"]
    # Previews: the content row and one row per style.
    preview = Image.open(whole / "previews" / "step_000006.png")
    assert preview.size[1] == 3 * 32

    params, ncfg, saved = train.restore_params(whole)
    assert ncfg.num_styles == 2 and saved["styles"] == [str(p.resolve()) for p in styles[:2]]
    scale = np.asarray(params["in1"]["scale"])
    assert scale.shape == (2, 8) and np.abs(scale[0] - scale[1]).max() > 1e-4
    assert models.workdir_kind(whole) == "multistyle"

    # Fine-tune a third style onto the trained network: only its rows move.
    tuned = tmp_path / "tuned"
    ft = dataclasses.replace(cfg, steps=3)
    train.train_and_evaluate(ft, tuned, [str(styles[2])], vgg, base=whole, progress=False)
    new, ncfg3, saved3 = train.restore_params(tuned)
    assert ncfg3.num_styles == 3 and saved3["finetune"]["first_style"] == 2
    assert saved3["styles"][:2] == saved["styles"]
    for path, v in _flat(params).items():
        w = np.asarray(_flat(new)[path])
        if train._is_style_row(path):
            np.testing.assert_array_equal(w[:2], np.asarray(v))
            start = np.asarray(v).mean(0)  # new rows start at the mean of the old ones
            assert np.abs(w[2] - start).max() > 1e-4, path
        else:
            np.testing.assert_array_equal(w, np.asarray(v), err_msg=str(path))


def test_cli_multistyle(cli_main, cli_env, data_dir, styles, tmp_path):  # noqa: F811
    _, wfile = cli_env
    common = ["--data", f"folder:{data_dir}", "--net", "tiny", "--image-size", "32"]
    common += ["--style-size", "48", "--steps", "2", "--checkpoint-every", "2", "-q"]
    common += ["--weights", str(wfile)]
    work = tmp_path / "work"
    code, err = cli_main("train", *map(str, styles[:2]), "--workdir", str(work), *common)
    assert code == 0, err
    model = tmp_path / "multi.safetensors"
    code, err = cli_main("export", str(work), "-o", str(model))
    assert code == 0 and "multistyle" in err, err
    kind, _, ncfg, meta = models.load_model(model)
    assert kind == "multistyle" and ncfg.num_styles == 2
    assert models.style_names(meta) == ["stripes.png", "blobs.png"]
    assert json.loads(meta["training"])["steps"] == 2

    src = next(data_dir.glob("*.png"))
    content = np.asarray(Image.open(src).convert("RGB"), np.float32) / 255
    outs = {}
    for name, flags in {
        "i0": ["--style-index", "0"],
        "i1": ["--style-index", "1"],
        "mix": ["--style-mix", "1,0"],
        "lum": ["--style-index", "1", "--preserve-colors", "luminance"],
    }.items():
        out = tmp_path / f"{name}.png"
        code, err = cli_main("apply", str(model), str(src), "-o", str(out), *flags)
        assert code == 0, (flags, err)
        outs[name] = np.asarray(Image.open(out), np.float32) / 255
    np.testing.assert_array_equal(outs["i0"], outs["mix"])
    assert np.abs(outs["i0"] - outs["i1"]).max() > 0
    # Luminance: the content's chrominance (I, Q) is kept, up to 8-bit rounding.
    from jaxstyle.images import rgb_to_yiq

    iq = np.abs(rgb_to_yiq(outs["lum"])[..., 1:] - rgb_to_yiq(content)[..., 1:])
    assert iq.mean() < 0.01, iq.mean()

    # Fine-tuning from the exported file, through the CLI.
    tuned = tmp_path / "tuned"
    code, err = cli_main(
        "train", "--finetune-styles", str(styles[2]), "--base", str(model),
        "--workdir", str(tuned), *common,
    )  # fmt: skip
    assert code == 0, err
    code, err = cli_main("apply", str(tuned), str(src), "-o", str(tmp_path / "t.png"),
                         "--style-index", "2")  # fmt: skip
    assert code == 0, err


def test_cli_multistyle_bad_inputs(cli_main, cli_env, data_dir, styles, tmp_path):  # noqa: F811
    _, wfile = cli_env
    multi = tmp_path / "multi.safetensors"
    params = tn.init_params(MULTI, jax.random.PRNGKey(0))
    models.save_model(multi, params, MULTI, {"styles": json.dumps(["a.jpg", "b.jpg", "c.jpg"])})
    single = tmp_path / "single.safetensors"
    models.save_model(single, tn.init_params(tn.TINY, jax.random.PRNGKey(0)), tn.TINY)
    src = str(next(data_dir.glob("*.png")))
    existing = tmp_path / "existing.png"
    Image.new("RGB", (8, 8)).save(existing)
    before = existing.read_bytes()
    apply = ["apply", str(multi), src, "-o", str(existing)]
    cases = [
        (apply + ["--style-index", "3"], ["out of range", "0 a.jpg", "2 c.jpg"]),
        (apply + ["--style-mix", "1,2"], ["a mix of 2 weights", "3 styles"]),
        (apply + ["--style-mix", "1,x,2"], ["--style-mix"]),
        (apply, ["--style-index or --style-mix"]),
        (apply + ["--style-index", "0", "--style-mix", "1,0,0"], ["--style-index or"]),
        (apply + ["--style-index", "0", "--style", src], ["--style is for AdaIN"]),
        (["apply", str(single), src, "-o", str(existing), "--style-index", "0"], ["--style-index"]),
        (["apply", str(single), src, "-o", str(existing), "--style-mix", "1"], ["multi-style"]),
        (["train", "--workdir", str(tmp_path / "w1")], ["style image"]),
        (
            ["train", "--finetune-styles", src, "--workdir", str(tmp_path / "w2")],
            ["--base"],
        ),
        (
            ["train", src, "--base", str(multi), "--workdir", str(tmp_path / "w3")],
            ["--finetune-styles"],
        ),
        (
            [
                "train",
                src,
                "--finetune-styles",
                src,
                "--base",
                str(multi),
                "--workdir",
                str(tmp_path / "w4"),
            ],
            ["either"],
        ),  # fmt: skip
        (["train", src, src, "--workdir", str(tmp_path / "w5")], ["twice"]),
        (
            [
                "train",
                "--finetune-styles",
                src,
                "--base",
                str(tmp_path / "nope.safetensors"),
                "--workdir",
                str(tmp_path / "w6"),
            ],
            ["nope.safetensors"],
        ),  # fmt: skip
    ]
    for args, fragments in cases:
        code, err = cli_main(*args)
        assert code == 2, (args, err[-2000:])
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in err, err
        for f in fragments:
            assert f in lines[0], (args, lines[0])
    assert existing.read_bytes() == before
    for i in range(1, 7):
        assert not (tmp_path / f"w{i}").exists()


@pytest.mark.parametrize("mode", ["luminance", "histogram"])
def test_preserve_colors_for_single_style(mode):
    rng = np.random.default_rng(3)
    params = perturbed(tn.init_params(tn.TINY, jax.random.PRNGKey(0)))
    content = rng.random((36, 44, 3)).astype(np.float32) * 0.5
    plain = inference.apply_images(params, tn.TINY, [content])[0]
    kept = inference.apply_images(params, tn.TINY, [content], preserve_colors=mode)[0]
    np.testing.assert_allclose(kept, inference.keep_colors(plain, content, mode), atol=1e-6)
    if mode == "histogram":  # the content's colour mean (away from the clipping bounds)
        np.testing.assert_allclose(kept.mean((0, 1)), content.mean((0, 1)), atol=0.02)
    with pytest.raises(ValueError, match="preserve_colors"):
        inference.apply_images(params, tn.TINY, [content], preserve_colors="lab")
