"""``jaxstyle export --format stablehlo|savedmodel|tflite``: each program, loaded in a fresh
process that never imports jaxstyle, gives ``jaxstyle apply``'s pixels (the arrays
:func:`~jaxstyle.inference.apply_images` / :func:`~jaxstyle.inference.apply_adain` return
before apply saves them), at two sizes, one not a multiple of 4 or 8; bad requests fail with one
line and exit 2, writing nothing."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jaxstyle import cli, models
from jaxstyle.inference import apply_adain, apply_images
from jaxstyle.nets import adain
from jaxstyle.nets import transformer_net as tn

pytest.importorskip("tensorflow")

SIZES = ((27, 30), (24, 32))  # 27 x 30: neither side a multiple of 4 (or 8)
TOL = 1 / 255
MULTI = dataclasses.replace(tn.TINY, num_styles=2)

# Each runner reads jobs.json ([{"file", "inputs": {name: .npy}, "out"}]), runs every job in its
# runtime and saves the output; it fails if jaxstyle got imported.
RUNNERS = {
    "stablehlo": """
        import json, sys, numpy as np, jax
        for job in json.load(open("jobs.json")):
            exp = jax.export.deserialize(bytearray(open(job["file"], "rb").read()))
            args = [np.load(a) for a in job["inputs"].values()]  # in the program's order
            np.save(job["out"], np.asarray(exp.call(*args)))
    """,
    "savedmodel": """
        import json, sys, numpy as np, tensorflow as tf
        for job in json.load(open("jobs.json")):
            run = tf.saved_model.load(job["file"]).signatures["serving_default"]
            out = run(**{k: tf.constant(np.load(v)) for k, v in job["inputs"].items()})
            np.save(job["out"], out["output_0"].numpy())
    """,
    "tflite": """
        import json, sys, numpy as np, tensorflow as tf
        for job in json.load(open("jobs.json")):
            it = tf.lite.Interpreter(model_path=job["file"])
            it.allocate_tensors()
            for d in it.get_input_details():
                it.set_tensor(d["index"], np.load(job["inputs"][d["name"]]))
            it.invoke()
            np.save(job["out"], it.get_tensor(it.get_output_details()[0]["index"]))
    """,
}


def run_fresh(fmt: str, jobs: list[dict], cwd) -> None:
    """Runs the ``fmt`` runner on ``jobs`` in ``python -I`` (no PYTHONPATH, no cwd on sys.path)."""
    (cwd / "jobs.json").write_text(json.dumps(jobs))
    code = textwrap.dedent(RUNNERS[fmt]) + '\nassert "jaxstyle" not in sys.modules\n'
    r = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Three model files (tiny Johnson, tiny 2-style, random AdaIN) and their inputs."""
    d = tmp_path_factory.mktemp("export")
    p1 = tn.init_params(tn.TINY, jax.random.PRNGKey(0))
    p2 = tn.init_params(MULTI, jax.random.PRNGKey(1))
    pa = adain.init_params(0)
    models.save_model(d / "johnson.safetensors", p1, tn.TINY)
    models.save_model(d / "multi.safetensors", p2, MULTI, {"styles": '["a.jpg", "b.jpg"]'})
    models.save_adain_model(d / "adain.safetensors", pa)
    rng = np.random.default_rng(0)
    images = {hw: rng.random((1, *hw, 3), np.float32) for hw in SIZES}
    style_img = rng.random((2, 24, 20, 3), np.float32)
    mix = np.array([0.25, 0.75], np.float32)
    alpha = np.float32(0.8)
    refs = {}
    for hw, x in images.items():
        refs["johnson", hw] = apply_images(p1, tn.TINY, list(x))[0]
        refs["multi", hw] = apply_images(p2, MULTI, list(x), style=mix)[0]
        refs["adain", hw] = apply_adain(pa, list(x), list(style_img), alpha=float(alpha))[0]
    return {"dir": d, "images": images, "style": style_img, "mix": mix, "alpha": alpha,
            "refs": refs}  # fmt: skip


def _inputs(work, kind, hw, tflite=False):
    """{input name: .npy path} of ``kind`` for an image of size ``hw``."""
    d = work["dir"]
    arrays = {"content" if kind == "adain" else "images": work["images"][hw]}
    if kind == "multi":
        arrays["style"] = work["mix"]
    if kind == "adain":
        # A TFLite program has fixed shapes: its style input is the content's size.
        style = work["style"] if not tflite else np.resize(work["style"][0], (1, *hw, 3))
        arrays["style"], arrays["alpha"] = style, work["alpha"]
    paths = {}
    for name, a in arrays.items():
        paths[name] = str(d / f"{kind}-{hw[0]}x{hw[1]}-{name}-{int(tflite)}.npy")
        np.save(paths[name], a)
    return paths


def _export(src, fmt, out, *extra) -> None:
    assert cli.main(["export", str(src), "--format", fmt, "-o", str(out), *extra]) == 0


@pytest.mark.parametrize("fmt", ["stablehlo", "savedmodel"])
def test_dynamic_formats_equal_apply(work, fmt):
    """One file per model serves both sizes (AdaIN: a batch of two style images)."""
    d = work["dir"]
    jobs, expect = [], []
    for kind in ("johnson", "multi", "adain"):
        art = d / f"{kind}.{fmt}"
        _export(d / f"{kind}.safetensors", fmt, art)
        for hw in SIZES:
            inputs = _inputs(work, kind, hw)
            out = str(d / f"out-{fmt}-{kind}-{hw[0]}.npy")
            jobs.append({"file": str(art), "inputs": inputs, "out": out})
            expect.append((out, work["refs"][kind, hw], kind, hw))
    run_fresh(fmt, jobs, d)
    for out, ref, kind, hw in expect:
        y = np.load(out)
        assert y.shape == (1, *hw, 3), (kind, hw)
        err = np.abs(y[0] - ref).max()
        assert err <= TOL, (kind, hw, err)


def _adain_tflite_ref(work, hw):
    """apply_adain with the style the tflite test feeds (one style of the content's size)."""
    params = adain.init_params(0)
    style = np.resize(work["style"][0], (*hw, 3))
    return apply_adain(params, list(work["images"][hw]), [style], alpha=float(work["alpha"]))[0]


def test_tflite_equals_apply_and_float16_error(work):
    """TFLite files are fixed-size: one per size (--size); float32 within 1/255, float16
    reported (printed) and bounded loosely."""
    d = work["dir"]
    jobs, expect = [], []
    for kind in ("johnson", "multi", "adain"):
        for hw in SIZES:
            if kind == "adain" and hw != SIZES[0]:
                continue  # AdaIN conversions are slow; one (odd) size
            for q in ([], ["--quantize", "float16"]):
                art = d / f"{kind}-{hw[0]}x{hw[1]}{'-f16' if q else ''}.tflite"
                _export(d / f"{kind}.safetensors", "tflite", art, "--size", f"{hw[0]}x{hw[1]}", *q)
                out = str(art) + ".npy"
                jobs.append({"file": str(art), "inputs": _inputs(work, kind, hw, True), "out": out})
                ref = _adain_tflite_ref(work, hw) if kind == "adain" else work["refs"][kind, hw]
                expect.append((out, ref, kind, hw, bool(q)))
    run_fresh("tflite", jobs, d)
    for out, ref, kind, hw, f16 in expect:
        err = np.abs(np.load(out)[0] - ref)
        if f16:
            print(f"float16 {kind} {hw}: max {err.max() * 255:.2f}/255, mean", end=" ")
            print(f"{err.mean() * 255:.3f}/255")
            assert err.max() < 0.1, (kind, hw, err.max())
        else:
            assert err.max() <= TOL, (kind, hw, err.max())
    f32 = (d / "johnson-27x30.tflite").stat().st_size
    f16 = (d / "johnson-27x30-f16.tflite").stat().st_size
    assert f16 < f32


def test_stablehlo_platforms_and_symbolic_shapes(work, tmp_path):
    _export(work["dir"] / "johnson.safetensors", "stablehlo", tmp_path / "j.stablehlo")
    exp = jax.export.deserialize(bytearray((tmp_path / "j.stablehlo").read_bytes()))
    assert exp.platforms == ("cpu", "cuda")
    assert str(exp.in_avals[0].shape) == "(n, h, w, 3)"
    # The CPU branch runs jaxstyle's CPU forms (matmuls), the CUDA one XLA's convolutions only.
    from jaxstyle import export
    from jaxstyle.inference import load_any

    prog = export.program(*load_any(work["dir"] / "johnson.safetensors")[:3])
    cpu, cuda = (
        jax.export.deserialize(bytearray(export.to_stablehlo(prog, (p,)))).mlir_module()
        for p in ("cpu", "cuda")
    )
    assert "dot_general" in cpu and "dot_general" not in cuda


def test_safetensors_from_a_model_file_copies_it(work, tmp_path):
    _export(work["dir"] / "johnson.safetensors", "safetensors", tmp_path / "copy.safetensors")
    assert (tmp_path / "copy.safetensors").read_bytes() == (
        work["dir"] / "johnson.safetensors"
    ).read_bytes()


@pytest.mark.parametrize(
    "args, says",
    [
        (["--format", "onnx"], "unknown format 'onnx'"),
        (["--format", "stablehlo", "--quantize", "float16"], "--quantize is for --format tflite"),
        (["--format", "tflite", "--quantize", "int8"], "unknown --quantize 'int8'"),
        (["--format", "savedmodel", "--size", "64"], "--size is for --format tflite"),
        (["--format", "tflite", "--size", "4x4"], "--size must be HxW"),
    ],
)
def test_bad_requests(work, tmp_path, capsys, args, says):
    out = tmp_path / "out.bin"
    rc = cli.main(["export", str(work["dir"] / "johnson.safetensors"), "-o", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and says in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["stablehlo", "savedmodel", "tflite"])
def test_unwritable_output(work, tmp_path, capsys, fmt):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = cli.main(["export", str(work["dir"] / "johnson.safetensors"), "--format", fmt, "-o",
                   str(blocker / "out")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "file" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
