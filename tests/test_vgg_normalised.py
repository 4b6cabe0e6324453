"""``vgg_normalised.pth`` (pytorch-AdaIN's VGG19 encoder) as the Gatys loss network.

The tests build a random network in the published layout with torch (the whole 53-module
``nn.Sequential`` of :mod:`experiments.lib.torch_adain`), save its state dict, and check that
jaxstyle's VGG19 features with that file equal a PyTorch forward of the same weights in the
Gatys trunk's form (the 1x1 input conv, then zero-padded 3x3 convs, ReLUs and floor-mode max
pooling); that ``stylize --net vgg19 --weights FILE.pth`` runs and that ``weights_convert``
writes a file that describes itself; and that the AdaIN decoder, or ``--net vgg16``, is
refused with one line. They skip without torch; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxstyle import cli
from jaxstyle.nets import vgg
from jaxstyle.weights import WeightsError, load, load_vgg, read_metadata, save

LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


@pytest.fixture(scope="module")
def modules():
    """``(vgg_normalised, decoder)``: random torch modules in the port's layout."""
    pytest.importorskip("torch")
    from experiments.lib.torch_adain import adain_modules

    return adain_modules(seed=3)


@pytest.fixture(scope="module")
def files(modules, tmp_path_factory) -> dict[str, Path]:
    import torch

    folder = tmp_path_factory.mktemp("vgg_normalised")
    out = {"vgg": folder / "vgg_normalised.pth", "decoder": folder / "decoder.pth"}
    torch.save(modules[0].state_dict(), out["vgg"])
    torch.save(modules[1].state_dict(), out["decoder"])
    return out


def gatys_trunk(vgg_normalised):
    """The same weights as a torch network in the Gatys trunk's form: the 1x1 input conv, then
    3x3 convolutions with zero padding 1, ReLUs, and 2x2 max pooling in floor mode. Returns a
    function ``NCHW images -> {layer: NCHW}`` for :data:`LAYERS`."""
    import torch
    from torch import nn

    convs = [m for m in vgg_normalised if isinstance(m, nn.Conv2d)]
    first, rest = convs[0], convs[1:]
    assert first.kernel_size == (1, 1) and len(rest) == 16

    def forward(x):
        out, k = {}, 0
        with torch.no_grad():
            x = first(x)
            for b, n in enumerate(vgg.ARCHS["vgg19"], 1):
                if b > 1:
                    x = nn.functional.max_pool2d(x, 2, 2, ceil_mode=False)
                for i in range(1, n + 1):
                    conv = rest[k]
                    x = torch.relu(nn.functional.conv2d(x, conv.weight, conv.bias, padding=1))
                    k += 1
                    if f"relu{b}_{i}" in LAYERS:
                        out[f"relu{b}_{i}"] = x.numpy()
        return out

    return forward


def test_features_equal_pytorch_gatys_trunk(modules, files):
    import torch

    net = load_vgg("vgg19", "max", str(files["vgg"]), progress=False)
    assert net.convention == "normalised"
    # Odd sides: floor-mode pooling drops the last row/column where ceil mode would keep it.
    img = np.random.default_rng(0).random((2, 37, 50, 3), dtype=np.float32)
    got = net.features(jnp.asarray(img), LAYERS)
    want = gatys_trunk(modules[0])(torch.from_numpy(img.transpose(0, 3, 1, 2).copy()))
    for layer in LAYERS:
        g = np.asarray(got[layer]).transpose(0, 3, 1, 2)
        w = want[layer]
        assert g.shape == w.shape, layer
        err = np.abs(g - w).max() / np.abs(w).max()
        assert err <= 1e-4, f"{layer}: relative error {err:.2e}"


def test_first_layer_is_the_input_map(modules, files):
    """The 1x1 conv is applied to RGB in [0, 1] as the port does (no other preprocessing)."""
    import torch

    params = load_vgg("vgg19", "max", str(files["vgg"]), progress=False).params
    img = np.random.default_rng(1).random((1, 4, 5, 3), dtype=np.float32)
    got = vgg.preprocess(jnp.asarray(img), "normalised", params[vgg.INPUT])
    with torch.no_grad():
        want = modules[0][0](torch.from_numpy(img.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="normalised convention needs"):
        vgg.preprocess(jnp.asarray(img), "normalised")


def test_weights_convert_writes_a_self_describing_file(files, tmp_path, capsys):
    from weights_convert.__main__ import main as convert

    out = tmp_path / "vgg19n.safetensors"
    assert convert([str(files["vgg"]), "-o", str(out), "--arch", "vgg19"]) == 0
    printed = capsys.readouterr().out
    assert "layout vgg_normalised: 34 tensors used" in printed
    assert "input convention normalised" in printed
    meta = read_metadata(out)
    assert (meta["arch"], meta["convention"]) == ("vgg19", "normalised")
    params, _ = load(out, "vgg19")
    assert params[vgg.INPUT]["kernel"].shape == (1, 1, 3, 3)
    direct = load_vgg("vgg19", "max", str(files["vgg"]), progress=False)
    converted = load_vgg("vgg19", "max", str(out), progress=False)
    for conv in vgg.param_shapes("vgg19", "normalised"):
        for kind in ("kernel", "bias"):
            np.testing.assert_array_equal(
                np.asarray(converted.params[conv][kind]), np.asarray(direct.params[conv][kind])
            )
    # Without the input map a normalised file is refused by name, on save and on load.
    broken = {c: p for c, p in params.items() if c != vgg.INPUT}
    with pytest.raises(WeightsError, match="missing tensor input.kernel"):
        save(tmp_path / "broken.safetensors", broken, meta)
    from safetensors.numpy import save_file

    tensors = {f"{c}.{k}": a for c, p in broken.items() for k, a in p.items()}
    save_file(tensors, str(tmp_path / "broken.safetensors"), metadata=meta)
    with pytest.raises(WeightsError, match="missing tensor input.kernel"):
        load(tmp_path / "broken.safetensors", "vgg19")


def _image(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


def test_stylize_with_vgg_normalised_pth(files, tmp_path, capsys):
    content, style = _image(tmp_path / "c.png", 0), _image(tmp_path / "s.png", 1)
    out = tmp_path / "out.png"
    argv = ["stylize", str(content), str(style), "-o", str(out), "-q", "--net", "vgg19"]
    argv += ["--weights", str(files["vgg"]), "--size", "32", "--iterations", "2"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    with Image.open(out) as im:
        assert im.size == (32, 32)


def _stylize_error(tmp_path, capsys, weights: Path, net: str) -> str:
    content, style = _image(tmp_path / "c.png", 0), _image(tmp_path / "s.png", 1)
    argv = ["stylize", str(content), str(style), "-o", str(tmp_path / "o.png"), "-q"]
    argv += ["--net", net, "--weights", str(weights), "--size", "32", "--iterations", "1"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert not (tmp_path / "o.png").exists()
    return err


def test_decoder_given_as_weights_is_refused(files, tmp_path, capsys):
    err = _stylize_error(tmp_path, capsys, files["decoder"], "vgg19")
    assert "decoder.pth, not a VGG" in err and "vgg_normalised.pth" in err


def test_vgg_normalised_with_vgg16_is_refused(files, tmp_path, capsys):
    err = _stylize_error(tmp_path, capsys, files["vgg"], "vgg16")
    assert "not vgg16" in err and "--net vgg19" in err


def test_weights_convert_refuses_decoder_and_vgg16(files, tmp_path, capsys):
    from weights_convert.__main__ import main as convert

    out = tmp_path / "x.safetensors"
    assert convert([str(files["decoder"]), "-o", str(out), "--arch", "vgg19"]) == 2
    assert "decoder.pth, not a VGG" in capsys.readouterr().err
    assert convert([str(files["vgg"]), "-o", str(out)]) == 2  # --arch defaults to vgg16
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--arch vgg19" in err
    assert not out.exists()
