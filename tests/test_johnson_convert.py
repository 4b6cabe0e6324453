"""Tests for jaxstyle.weights.johnson (pytorch/examples fast_neural_style -> jaxstyle models)
and its command line, ``python -m weights_convert johnson``.

The parity test builds the PyTorch TransformerNet exactly as pytorch/examples defines it, saves
its state dict with torch.save, converts it through the command line and the API, and runs both
networks on the same images. The error-path tests write state dicts as safetensors from a hand
written key table, so they run without torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstyle.models import load_model
from jaxstyle.nets.transformer_net import NetConfig, TransformerNet
from jaxstyle.weights import ConvertError
from jaxstyle.weights.johnson import convert_johnson
from weights_convert.__main__ import main as convert_main

REPO = Path(__file__).resolve().parents[1]
FULL_255 = NetConfig(
    channels=(32, 64, 128), num_res=5, upsample="nearest", io_scale=255.0, output="linear"
)
STALE = ("in1.running_mean", "in1.running_var")


# ---------------------------------------------------------------------------------------------
# The source network: pytorch/examples fast_neural_style/neural_style/transformer_net.py.


def torch_transformer_net():
    """The ``TransformerNet`` class of pytorch/examples (from experiments/lib/torch_ref.py)."""
    pytest.importorskip("torch")
    from experiments.lib.torch_ref import transformer_net_class

    return transformer_net_class()


@pytest.fixture(scope="module")
def torch_net_pth(tmp_path_factory):
    """``(net, path)``: a randomly initialised network and its state dict as an old-style .pth.

    InstanceNorm2d initialises its affine parameters to 1 and 0, which would hide a scale read
    as a bias or from the wrong layer; they are randomised too. The output layer is scaled so
    that outputs span most of 0-255, as a trained model's do.
    """
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch_transformer_net()().eval()
    with torch.no_grad():
        for name, module in net.named_modules():
            if isinstance(module, torch.nn.InstanceNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.5)
                assert name.split(".")[-1].startswith("in")
        # A trained network's last layer spans 0-255; at the default init it gives about +-2,
        # where an absolute tolerance on the 0-255 scale would check almost nothing.
        net.deconv3.conv2d.weight.mul_(60.0)
        net.deconv3.conv2d.bias.add_(128.0)
    state = net.state_dict()
    # PyTorch < 0.4 saved running statistics for InstanceNorm2d; published models carry them.
    state["in1.running_mean"] = torch.zeros(32)
    state["in1.running_var"] = torch.ones(32)
    path = tmp_path_factory.mktemp("torch") / "candy.pth"
    torch.save(state, str(path))
    return net, path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "weights_convert", "johnson", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_parity_with_pytorch(torch_net_pth, tmp_path):
    torch = pytest.importorskip("torch")
    net, src = torch_net_pth
    out = tmp_path / "candy.safetensors"
    proc = run_cli(src, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "unexpected keys (dropped) (2): in1.running_mean, in1.running_var" in proc.stdout
    kind, params, config, meta = load_model(out)
    assert kind == "johnson" and meta["kind"] == "johnson"
    assert config == FULL_255
    assert meta["source"] == "candy.pth" and len(meta["source_sha256"]) == 64

    api_params, api_config, report = convert_johnson(src)
    assert api_config == FULL_255
    assert report.unexpected == list(STALE)
    same = jax.tree_util.tree_map(np.array_equal, api_params, params)
    assert jax.tree_util.tree_all(same), "the CLI and the API disagree"

    images = np.random.default_rng(0).uniform(0.0, 255.0, (2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(images)).numpy()
    x = jnp.asarray(images.transpose(0, 2, 3, 1) / 255.0)
    got = np.asarray(TransformerNet(config).apply({"params": params}, x)) * 255.0
    got = got.transpose(0, 3, 1, 2)
    diff = float(np.max(np.abs(got - want)))
    print(f"max |jaxstyle - torch| = {diff:.3g} (output range {want.min():.3g}..{want.max():.3g})")
    assert want.max() - want.min() > 100.0  # the comparison is on a realistic output range
    # The raw linear outputs, unclipped, on the 0-255 scale (float32 accumulation gives ~3e-4).
    assert diff <= 1e-3


def test_model_suffix_accepted(torch_net_pth, tmp_path):
    # fast_neural_style's training script saves its state dicts as ``*.model``.
    src = tmp_path / "epoch_2_Sat_Jan__1_1e5_1e10.model"
    src.write_bytes(torch_net_pth[1].read_bytes())
    params, config, _ = convert_johnson(src)
    assert config == FULL_255
    assert params["deconv3"]["conv2d"]["kernel"].shape == (9, 9, 32, 3)


# ---------------------------------------------------------------------------------------------
# Without torch: state dicts written as safetensors from a hand-written key table.


def fns_state(
    channels: tuple[int, int, int] = (8, 16, 24), num_res: int = 2, seed: int = 0
) -> dict[str, np.ndarray]:
    """A random state dict with the key names and OIHW shapes of pytorch/examples."""
    rng = np.random.default_rng(seed)
    c1, c2, c3 = channels
    state = {}

    def conv(name, cin, cout, k):
        state[f"{name}.conv2d.weight"] = rng.normal(0, 0.1, (cout, cin, k, k)).astype(np.float32)
        state[f"{name}.conv2d.bias"] = rng.normal(0, 0.1, (cout,)).astype(np.float32)

    def norm(name, c):
        state[f"{name}.weight"] = rng.uniform(0.5, 1.5, (c,)).astype(np.float32)
        state[f"{name}.bias"] = rng.normal(0, 0.1, (c,)).astype(np.float32)

    for name, cin, cout, k in [("conv1", 3, c1, 9), ("conv2", c1, c2, 3), ("conv3", c2, c3, 3)]:
        conv(name, cin, cout, k)
        norm(f"in{name[-1]}", cout)
    for i in range(1, num_res + 1):
        for j in (1, 2):
            conv(f"res{i}.conv{j}", c3, c3, 3)
            norm(f"res{i}.in{j}", c3)
    conv("deconv1", c3, c2, 3)
    norm("in4", c2)
    conv("deconv2", c2, c1, 3)
    norm("in5", c1)
    conv("deconv3", c1, 3, 9)
    return state


def write_st(path: Path, state: dict[str, np.ndarray]) -> Path:
    from safetensors.numpy import save_file

    save_file(state, str(path))
    return path


def test_infers_architecture_and_maps_every_tensor(tmp_path):
    state = fns_state((8, 16, 24), num_res=2)
    state["res2.in1.running_var"] = np.ones(24, np.float32)
    params, config, report = convert_johnson(write_st(tmp_path / "s.safetensors", state))
    assert config == NetConfig((8, 16, 24), 2, "nearest", 255.0, "linear")
    assert report.unexpected == ["res2.in1.running_var"]
    assert len(report.used) == len(state) - 1
    r1 = params["res1"]
    np.testing.assert_array_equal(
        r1["conv2"]["conv2d"]["kernel"], state["res1.conv2.conv2d.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(r1["in2"]["scale"], state["res1.in2.weight"])
    np.testing.assert_array_equal(r1["in2"]["bias"], state["res1.in2.bias"])
    np.testing.assert_array_equal(params["deconv2"]["conv2d"]["bias"], state["deconv2.conv2d.bias"])
    # The result is exactly what TransformerNet(config) expects.
    x = jnp.zeros((1, 16, 16, 3))
    jax.eval_shape(lambda p: TransformerNet(config).apply({"params": p}, x), params)


def test_data_parallel_prefix(tmp_path):
    state = {f"module.{k}": v for k, v in fns_state().items()}
    _, config, _ = convert_johnson(write_st(tmp_path / "dp.safetensors", state))
    assert config.channels == (8, 16, 24)


def assert_convert_error(path: Path, *fragments: str) -> str:
    with pytest.raises(ConvertError) as e:
        convert_johnson(path)
    msg = str(e.value)
    for fragment in (str(path), *fragments):
        assert fragment in msg, msg
    return msg


def test_missing_tensor(tmp_path):
    state = fns_state(num_res=5)
    del state["res3.conv1.conv2d.weight"]
    assert_convert_error(write_st(tmp_path / "m.safetensors", state), "res3.conv1.conv2d.weight")


def test_missing_residual_block(tmp_path):
    state = {k: v for k, v in fns_state(num_res=5).items() if not k.startswith("res3.")}
    state["res99.in1.weight"] = np.ones(24, np.float32)  # numbers never size the network
    assert_convert_error(write_st(tmp_path / "b.safetensors", state), "residual block res3")


@pytest.mark.parametrize(
    "key, shape",
    [
        ("conv2.conv2d.weight", (16, 8, 5, 5)),  # a 5x5 kernel where the network has 3x3
        ("conv3.conv2d.weight", (24, 9, 3, 3)),  # input channels that do not chain
        ("res2.in2.weight", (23,)),
        ("deconv1.conv2d.bias", (16, 1)),
    ],
)
def test_wrong_shape(key, shape, tmp_path):
    state = fns_state()
    state[key] = np.zeros(shape, np.float32)
    assert_convert_error(write_st(tmp_path / "w.safetensors", state), key, str(shape))


def test_unexpected_tensor(tmp_path):
    # A network with an extra layer is not this one; dropping the layer would be silently wrong.
    state = {**fns_state(), "in6.weight": np.ones(8, np.float32)}
    assert_convert_error(write_st(tmp_path / "u.safetensors", state), "in6.weight")


def vgg_state() -> dict[str, np.ndarray]:
    return {
        "features.0.weight": np.zeros((64, 3, 3, 3), np.float32),
        "features.0.bias": np.zeros(64, np.float32),
        "classifier.0.weight": np.zeros((8, 4), np.float32),
    }


def test_vgg_state_dict(tmp_path):
    msg = assert_convert_error(write_st(tmp_path / "vgg16.safetensors", vgg_state()))
    assert "not a pytorch/examples fast_neural_style TransformerNet" in msg
    assert "features.0.weight" in msg


def test_vgg_pth(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "vgg16.pth"
    torch.save({k: torch.from_numpy(v) for k, v in vgg_state().items()}, str(path))
    assert_convert_error(path, "not a pytorch/examples fast_neural_style TransformerNet")


def test_jaxstyle_model_given(torch_net_pth, tmp_path):
    out = tmp_path / "already.safetensors"
    assert convert_main(["johnson", str(torch_net_pth[1]), "-o", str(out)]) == 0
    assert_convert_error(out, "already a jaxstyle model")


def test_truncated_pth(torch_net_pth, tmp_path):
    src = tmp_path / "truncated.pth"
    data = torch_net_pth[1].read_bytes()
    src.write_bytes(data[: len(data) // 2])
    assert_convert_error(src, "cannot read")


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "net.onnx"
    path.write_bytes(b"")
    assert_convert_error(path, "unsupported format")


@pytest.mark.parametrize(
    "problem", ["missing_tensor", "truncated", "vgg", "missing_file", "nan", "int8"]
)
def test_cli_bad_input(problem, tmp_path, capsys):
    # In-process: test_parity_with_pytorch covers how the module is started.
    state = fns_state()
    if problem == "missing_tensor":
        del state["res1.conv1.conv2d.weight"]
    elif problem == "nan":
        state["res2.in1.weight"][3] = np.nan
    elif problem == "int8":
        state["deconv1.conv2d.weight"] = state["deconv1.conv2d.weight"].astype(np.int8)
    src = write_st(tmp_path / "src.safetensors", vgg_state() if problem == "vgg" else state)
    if problem == "truncated":
        with open(src, "r+b") as f:
            f.truncate(src.stat().st_size // 2)
    elif problem == "missing_file":
        src.unlink()
    out = tmp_path / "existing.safetensors"
    out.write_bytes(b"previous contents")
    assert convert_main(["johnson", str(src), "-o", str(out)]) == 2
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    assert len(errors) == 1 and errors[0].startswith("error:"), captured.err
    assert str(src) in errors[0] and captured.out == ""
    fragment = {
        "missing_tensor": "res1.conv1.conv2d.weight",
        "nan": "tensor res2.in1.weight has 1 non-finite values",
        "int8": "tensor deconv1.conv2d.weight holds int8",
    }.get(problem, "")
    assert fragment in errors[0]
    assert out.read_bytes() == b"previous contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {"existing.safetensors"} | ({src.name} if src.exists() else set())
    )


@pytest.mark.parametrize("how", ["same", "symlink"])
def test_cli_refuses_to_overwrite_source(how, tmp_path, capsys):
    src = write_st(tmp_path / "src.safetensors", fns_state())
    before = src.read_bytes()
    out = src if how == "same" else tmp_path / "link.safetensors"
    if how == "symlink":
        out.symlink_to(src)
    assert convert_main(["johnson", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "refusing to overwrite" in err, err
    assert src.read_bytes() == before
    assert out.resolve() == src  # the link is still a link


def test_write_johnson_refuses_unwritable_output_before_reading(tmp_path):
    from jaxstyle.fileio import OutputError
    from jaxstyle.weights.johnson import write_johnson

    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "model.safetensors"
    with pytest.raises(OutputError) as e:
        write_johnson(tmp_path / "absent.pth", out)  # OUT is checked first: SRC is never read
    assert str(out) in str(e.value)


def test_apply_with_defaults_equals_pytorch_on_the_photo_alone(torch_net_pth, tmp_path):
    # Issue 9: apply's default bucket (64) padded a 96x72 photo to 128x128, which changed the
    # instance-norm statistics and the borders: up to 85/255 from PyTorch's output on the photo.
    torch = pytest.importorskip("torch")
    from jaxstyle import inference

    net, src = torch_net_pth
    params, config, _ = convert_johnson(src)
    photo = np.random.default_rng(1).uniform(0.0, 1.0, (96, 72, 3)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(photo.transpose(2, 0, 1)[None] * 255.0)).numpy()
    want = np.clip(want[0].transpose(1, 2, 0) / 255.0, 0.0, 1.0)
    (got,) = inference.apply_images(params, config, [photo])  # the defaults: bucket 64
    assert got.shape == photo.shape
    assert np.abs(got - want).max() <= 1 / 255
