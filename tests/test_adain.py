"""Tests for AdaIN arbitrary style transfer: the network (jaxstyle.nets.adain), its converter
(``python -m weights_convert adain``), its model files and ``jaxstyle apply --style``.

The parity tests build a random PyTorch AdaIN network exactly in the layout of the PyTorch port
(naoto0804/pytorch-AdaIN: ``vgg_normalised`` as the whole 53-module VGG19 ``nn.Sequential``, the
mirror decoder), save both state dicts with torch.save, convert them through the command line,
and compare with the port's ``style_transfer`` (reimplemented here from its published
definition). They skip without torch. The bad-input tests run in-process and need no torch.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file
from test_cli import assert_one_error, run_main

from jaxstyle import demo, models
from jaxstyle import images as imlib
from jaxstyle.nets import adain
from weights_convert.__main__ import main as convert_main

TOL = 1e-3


# ---------------------------------------------------------------------------------------------
# The PyTorch network of the port (experiments/lib/torch_adain.py), converted.


def torch_modules():
    """``(vgg, decoder)`` of the port (experiments/lib/torch_adain.py), the decoder's last layer
    scaled so that outputs are about 0.5 +- 0.15: mostly inside [0, 1], where clipping does not
    hide differences."""
    torch = pytest.importorskip("torch")
    vgg, dec = adain_modules()
    y = torch_style_transfer(vgg, dec, _image(48, 64, 0), [_image(64, 64, 1)])
    mean, std = torch.from_numpy(y.mean(axis=(0, 1))), torch.from_numpy(y.std(axis=(0, 1)))
    with torch.no_grad():
        dec[-1].weight.mul_((0.15 / std)[:, None, None, None])
        dec[-1].bias.copy_(0.5 + (dec[-1].bias - mean) * 0.15 / std)
    return vgg, dec


def torch_style_transfer(vgg, decoder, content, styles, alpha=1.0, weights=None):
    """The port's ``style_transfer`` on HWC [0, 1] arrays -> HWC, uncropped, unclipped."""
    from experiments.lib.torch_adain import style_transfer, to_nchw

    y = style_transfer(vgg, decoder, to_nchw(content), [to_nchw(s) for s in styles], alpha, weights)
    return y[0].permute(1, 2, 0).numpy()


def adain_modules():
    pytest.importorskip("torch")
    from experiments.lib.torch_adain import adain_modules

    return adain_modules()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """``(vgg, decoder, model_path, vgg_pth, decoder_pth)``: the pair saved and converted."""
    torch = pytest.importorskip("torch")
    vgg, dec = torch_modules()
    d = tmp_path_factory.mktemp("adain")
    vgg_pth, dec_pth, out = d / "vgg_normalised.pth", d / "decoder.pth", d / "adain.safetensors"
    torch.save(vgg.state_dict(), vgg_pth)
    torch.save(dec.state_dict(), dec_pth)
    assert convert_main(["adain", str(vgg_pth), str(dec_pth), "-o", str(out)]) == 0
    return vgg, dec, out, vgg_pth, dec_pth


def _image(h, w, seed):
    img = demo.draw_landscape(w, h) if seed == 0 else demo.draw_style(max(h, w))[:h, :w]
    assert img.shape == (h, w, 3)
    return img.astype(np.float32)


@pytest.mark.parametrize(
    "content_hw, style_hws, alpha, weights",
    [
        ((48, 64), [(64, 64)], 1.0, None),
        ((48, 64), [(64, 64)], 0.6, None),
        ((48, 64), [(64, 64), (56, 72)], 1.0, [1, 3]),
        ((45, 59), [(64, 64), (56, 72)], 0.8, [2, 1]),  # not multiples of 8: ceil pooling
    ],
    ids=["alpha1", "alpha0.6", "two-styles", "odd-size"],
)
def test_parity_with_pytorch(converted, content_hw, style_hws, alpha, weights):
    vgg, dec, out, _, _ = converted
    kind, params, config, meta = models.load_model(out)
    assert (kind, config, meta["kind"]) == ("adain", None, "adain")
    content = _image(*content_hw, 0)
    styles = [_image(h, w, 1) for h, w in style_hws]
    want = torch_style_transfer(vgg, dec, content, styles, alpha, weights)
    h, w = content_hw
    # The port's output is the decoder's, rounded up to a multiple of 8; ours its top-left crop.
    assert want.shape[:2] == (-(-h // 8) * 8, -(-w // 8) * 8)
    want = np.clip(want[:h, :w], 0, 1)
    assert np.mean((want > 0) & (want < 1)) > 0.9  # the comparison is not of clipped constants
    got = np.asarray(adain.stylize(params, content[None], styles, alpha, weights))[0]
    assert got.shape == content.shape
    np.testing.assert_allclose(got, want, atol=TOL)


def test_apply_command_matches_pytorch(converted, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JAXSTYLE_HOME", str(tmp_path / "home"))
    vgg, dec, model, _, _ = converted
    content, styles = _image(45, 59, 0), [_image(64, 64, 1), _image(40, 72, 1)]
    c = imlib.save_image(tmp_path / "c.png", content)
    s = [imlib.save_image(tmp_path / f"s{i}.png", x) for i, x in enumerate(styles)]
    out = tmp_path / "out.png"
    argv = ["apply", str(model), str(c), "-o", str(out), "--style", str(s[0]), str(s[1])]
    argv += ["--style-weights", "1,3", "--alpha", "0.7", "--style-size", "0", "-q"]
    rc, _, err = run_main(capsys, *argv)
    assert rc == 0, err
    # From the files as written (8-bit), so that both sides see the same pixels.
    content, styles = imlib.load_image(c), [imlib.load_image(p) for p in s]
    want = np.clip(torch_style_transfer(vgg, dec, content, styles, 0.7, [1, 3])[:45, :59], 0, 1)
    np.testing.assert_allclose(imlib.load_image(out), want, atol=0.5 / 255 + TOL)


def test_converter_reports_unused_vgg_layers(converted, capsys):
    _, _, _, vgg_pth, dec_pth = converted
    out = vgg_pth.parent / "again.safetensors"
    assert convert_main(["adain", str(vgg_pth), str(dec_pth), "-o", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "unused keys (dropped) (14): 32.bias, 32.weight" in stdout
    assert "unused keys (dropped): none" in stdout  # the decoder's


# ---------------------------------------------------------------------------------------------
# Without torch: state dicts written as safetensors, models written by jaxstyle.


def _state_dicts(tmp_path: Path) -> tuple[Path, Path]:
    """A vgg_normalised and a decoder state dict (zeros) in the port's key layout."""
    vgg, dec = {}, {}
    for part, target in (("vgg", vgg), ("decoder", dec)):
        for idx, s in adain.param_shapes()[part].items():
            k = s["kernel"]
            target[f"{idx}.weight"] = np.zeros((k[3], k[2], k[0], k[1]), np.float32)
            target[f"{idx}.bias"] = np.zeros(s["bias"], np.float32)
    save_file(vgg, str(tmp_path / "vgg_normalised.safetensors"))
    save_file(dec, str(tmp_path / "decoder.safetensors"))
    return tmp_path / "vgg_normalised.safetensors", tmp_path / "decoder.safetensors"


@pytest.mark.parametrize("swap", ["decoder-as-vgg", "vgg-as-decoder"])
def test_converter_refuses_swapped_files(tmp_path, capsys, swap):
    vgg, dec = _state_dicts(tmp_path)
    # The swapped pair is refused at the VGG; a VGG given for both at the decoder.
    pair, looks = {
        "decoder-as-vgg": ((dec, vgg), "looks like decoder.pth"),
        "vgg-as-decoder": ((vgg, vgg), "given as decoder.pth (the decoder) but it looks like vgg"),
    }[swap]
    out = tmp_path / "m.safetensors"
    rc = convert_main(["adain", *map(str, pair), "-o", str(out)])
    assert_one_error(rc, *capsys.readouterr(), looks)
    assert not out.exists()


def test_converter_refuses_a_bad_tensor(tmp_path, capsys):
    from safetensors.numpy import load_file

    vgg, dec = _state_dicts(tmp_path)
    tensors = load_file(str(dec))
    tensors["8.weight"] = tensors["8.weight"][:, :128]
    save_file(tensors, str(dec))
    rc = convert_main(["adain", str(vgg), str(dec), "-o", str(tmp_path / "m.safetensors")])
    out, err = capsys.readouterr()
    assert_one_error(rc, out, err, "8.weight has shape (256, 128, 3, 3)")


@pytest.fixture(scope="module")
def models_and_images(tmp_path_factory) -> dict[str, Path]:
    """A random AdaIN model, a tiny Johnson one (no ``kind`` in its metadata, as files written
    before kinds existed), a content and two style images."""
    from jaxstyle.nets.transformer_net import TINY, init_params

    d = tmp_path_factory.mktemp("models")
    files = {"adain": models.save_adain_model(d / "a.safetensors", adain.init_params())}
    # Zeros of the right shapes: the tests refuse flags before any network runs.
    shapes = jax.eval_shape(lambda: init_params(TINY, jax.random.PRNGKey(0)))
    params = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, np.float32), shapes)
    files["johnson"] = models.save_model(d / "j.safetensors", params, TINY)
    from safetensors.numpy import load_file

    from jaxstyle.weights import read_metadata

    meta = read_metadata(files["johnson"])
    assert meta.pop("kind") == "johnson"
    save_file(load_file(str(files["johnson"])), str(files["johnson"]), metadata=meta)
    files["content"] = imlib.save_image(d / "c.png", _image(48, 64, 0))
    files["s1"] = imlib.save_image(d / "s1.png", _image(64, 64, 1))
    files["s2"] = imlib.save_image(d / "s2.png", _image(32, 32, 1))
    return files


def test_model_kinds(models_and_images):
    kind, _, config, meta = models.load_model(models_and_images["johnson"])
    assert kind == "johnson" and "kind" not in meta and config is not None
    assert models.model_kind(models_and_images["adain"]) == "adain"
    assert models.load_model(models_and_images["adain"])[0] == "adain"


BAD_APPLY = {
    "alpha-too-big": ("adain", ["--style", "{s1}", "--alpha", "1.5"], "--alpha must be in [0, 1]"),
    "alpha-nan": ("adain", ["--style", "{s1}", "--alpha", "nan"], "--alpha must be in [0, 1]"),
    "weights-count": (
        "adain",
        ["--style", "{s1}", "{s2}", "--style-weights", "1"],
        "--style-weights has 1 values for 2 style images",
    ),
    "weights-negative": (
        "adain",
        ["--style", "{s1}", "{s2}", "--style-weights", "1,-1"],
        "must be finite, >= 0",
    ),
    "weights-inf": ("adain", ["--style", "{s1}", "--style-weights", "inf"], "must be finite"),
    "no-style": ("adain", [], "is an AdaIN model: give style images with --style"),
    "style-on-johnson": ("johnson", ["--style", "{s1}"], "--style is for AdaIN models"),
    "alpha-on-johnson": ("johnson", ["--alpha", "0.5"], "--alpha is for AdaIN models"),
    "output-is-style": ("adain", ["--style", "{s1}", "-o", "{s1}"], "s1.png"),
}


@pytest.mark.parametrize("case", list(BAD_APPLY))
def test_apply_refuses_bad_flags(models_and_images, tmp_path, capsys, monkeypatch, case):
    monkeypatch.setenv("JAXSTYLE_HOME", str(tmp_path / "home"))
    model, extra, must = BAD_APPLY[case]
    f = {k: str(v) for k, v in models_and_images.items()}
    extra = [a.format(**f) for a in extra]
    argv = [
        "apply",
        f[model],
        f["content"],
        *(["-o", str(tmp_path / "o.png")] * ("-o" not in extra)),
    ]
    before = Path(f["s1"]).read_bytes()
    rc, out, err = run_main(capsys, *argv, *extra, "-q")
    assert_one_error(rc, out, err, must)
    assert not (tmp_path / "o.png").exists() and Path(f["s1"]).read_bytes() == before


@pytest.mark.parametrize("mode", ["histogram", "luminance"])
def test_preserve_colors(mode):
    """histogram: each style recoloured to the content before encoding (as the port's
    --preserve_color); luminance: the output given the content's chrominance."""
    from jaxstyle import inference

    params = jax.tree_util.tree_map(jax.numpy.asarray, adain.init_params(0))
    content, style = _image(48, 64, 0), _image(40, 40, 1)
    got = inference.apply_adain(params, [content], [style], alpha=0.7, preserve_colors=mode)[0]
    if mode == "histogram":
        recoloured = imlib.match_color(style, content)
        want = inference.apply_adain(params, [content], [recoloured], alpha=0.7)[0]
    else:
        plain = inference.apply_adain(params, [content], [style], alpha=0.7)[0]
        want = imlib.transfer_luminance(plain, content)
    np.testing.assert_allclose(got, want, atol=1e-5)
