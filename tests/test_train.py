"""Tests for the Johnson pipeline: network, training (resume, multi-device), apply and export.

Training runs use the tiny network variant at 32-64 px on a handful of images; VGG16 weights are
the real ones when cached (marked ``real_weights``), otherwise random ones of the right shapes so
the mechanics are still tested.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxstyle import train
from jaxstyle.configs import TrainConfig
from jaxstyle.nets.transformer_net import FULL, TINY, TransformerNet, init_params, param_count
from jaxstyle.nets.vgg import VGGNet
from jaxstyle.nets.vgg import init_params as vgg_init

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "images"


@pytest.fixture(scope="module")
def vgg() -> VGGNet:
    """VGG16 with random weights: training mechanics do not depend on the weights' values."""
    return VGGNet(params=vgg_init("vgg16", jax.random.PRNGKey(1)), arch="vgg16")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A few real photos (when ../shared/images exists) and generated images."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for i in range(4):
        arr = (rng.random((48 + 8 * i, 40 + 4 * i, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"gen{i}.png")
    if (SHARED / "content").is_dir():
        for p in sorted((SHARED / "content").glob("*.jpg"))[:2]:
            Image.open(p).convert("RGB").resize((80, 60)).save(root / p.name)
    return root


@pytest.fixture(scope="module")
def style_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("style") / "style.png"
    src = SHARED / "style" / "starry_night.jpg"
    if src.exists():
        Image.open(src).convert("RGB").resize((64, 48)).save(path)
    else:
        from jaxstyle.demo import draw_style

        Image.fromarray((draw_style(64) * 255).astype(np.uint8)).save(path)
    return path


def tiny_config(data_dir: Path, **kw) -> TrainConfig:
    base = dict(
        data=f"folder:{data_dir}",
        net="tiny",
        image_size=32,
        style_size=64,
        batch_size=4,
        steps=10,
        checkpoint_every=5,
        preview_every=5,
        log_every=1,
        lr=1e-2,
        style_weight=10.0,
    )
    base.update(kw)
    return TrainConfig(**base)


def read_metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# The network.


def test_full_network_matches_the_paper_shapes():
    params = init_params(FULL, jax.random.PRNGKey(0))
    # The pytorch/examples fast_neural_style network has exactly this many parameters.
    assert param_count(params) == 1_679_235
    x = jnp.zeros((2, 64, 48, 3))
    y = TransformerNet(FULL).apply({"params": params}, x)
    assert y.shape == x.shape
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_tiny_and_transpose_variants():
    tiny = init_params(TINY, jax.random.PRNGKey(0))
    assert param_count(tiny) < 20_000
    cfg = dataclasses.replace(FULL, upsample="transpose")
    p = init_params(cfg, jax.random.PRNGKey(0))
    y = TransformerNet(cfg).apply({"params": p}, jnp.zeros((1, 32, 36, 3)))
    assert y.shape == (1, 32, 36, 3)


def test_stylize_pads_sizes_not_divisible_by_4():
    from jaxstyle.nets.transformer_net import stylize

    p = init_params(TINY, jax.random.PRNGKey(0))
    assert stylize(p, jnp.full((1, 37, 50, 3), 0.5), TINY).shape == (1, 37, 50, 3)


# ---------------------------------------------------------------------------------------------
# Training.


def test_train_step_jits_once_and_donates(vgg, data_dir):
    cfg = tiny_config(data_dir)
    tx = train.make_optimizer(cfg)
    params = init_params(TINY, jax.random.PRNGKey(0))
    state = train.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
    grams = {
        n: jnp.eye(c) * 0.01 for n, c in zip(cfg.style_layers, (64, 128, 256, 512), strict=True)
    }
    weights = {"content": jnp.float32(1), "style": jnp.float32(1), "tv": jnp.float32(0)}
    step = train.make_train_step(cfg, tx)
    batch = jnp.zeros((4, 32, 32, 3), jnp.uint8)
    state, _ = step(state, batch, vgg, grams, weights)
    n = step._cache_size()
    state, terms = step(state, batch, vgg, grams, weights)
    assert step._cache_size() == n == 1
    assert int(state.step) == 2 and np.isfinite(float(terms["total"]))


def test_tiny_trains_and_loss_falls(vgg, data_dir, style_path, tmp_path):
    cfg = tiny_config(data_dir, steps=20, checkpoint_every=20, preview_every=10)
    last = train.train_and_evaluate(cfg, tmp_path / "w", str(style_path), vgg, progress=False)
    assert last["step"] == 20
    m = read_metrics(tmp_path / "w")
    first, final = np.mean([r["total"] for r in m[:3]]), np.mean([r["total"] for r in m[-3:]])
    assert final < 0.7 * first, (first, final)
    assert sorted(p.name for p in (tmp_path / "w" / "previews").iterdir()) == [
        "step_000010.png",
        "step_000020.png",
    ]
    assert any((tmp_path / "w" / "tensorboard").iterdir())


def test_interrupted_run_resumes_identically(vgg, data_dir, style_path, tmp_path):
    cfg = tiny_config(data_dir, steps=10, checkpoint_every=5)
    whole = tmp_path / "whole"
    train.train_and_evaluate(cfg, whole, str(style_path), vgg, progress=False)
    parts = tmp_path / "parts"
    first = train.train_and_evaluate(cfg, parts, str(style_path), vgg, progress=False, stop_after=7)
    assert first["step"] == 7 and first["interrupted"] is False
    # Steps 6-7 were past the step-5 checkpoint... the stop itself checkpoints at step 7.
    train.train_and_evaluate(cfg, parts, str(style_path), vgg, progress=False)
    a, b = read_metrics(whole), read_metrics(parts)
    assert [r["step"] for r in b] == list(range(1, 11))
    for ra, rb in zip(a, b, strict=True):
        for k in ("total", "content", "style", "tv"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-6), (ra["step"], k)


def test_resume_refuses_other_settings(vgg, data_dir, style_path, tmp_path):
    cfg = tiny_config(data_dir, steps=2, checkpoint_every=1)
    train.train_and_evaluate(cfg, tmp_path / "w", str(style_path), vgg, progress=False)
    other = dataclasses.replace(cfg, style_weight=99.0, steps=4)
    with pytest.raises(train.TrainError, match="style_weight"):
        train.train_and_evaluate(other, tmp_path / "w", str(style_path), vgg, progress=False)


def test_tfds_coco_source_trains(vgg, style_path, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    cfg = TrainConfig(
        data="tfds:coco/2014",
        net="tiny",
        image_size=32,
        style_size=32,
        batch_size=2,
        steps=2,
        checkpoint_every=2,
        preview_every=2,
        log_every=1,
    )
    with tfds.testing.mock_data(num_examples=4):
        last = train.train_and_evaluate(cfg, tmp_path / "w", str(style_path), vgg, progress=False)
    assert last["step"] == 2 and np.isfinite(last["total"])


MULTI_DEVICE_SCRIPT = """
import json, sys, jax
from jaxstyle import train
from jaxstyle.configs import TrainConfig
from jaxstyle.nets.vgg import VGGNet, init_params
vgg = VGGNet(params=init_params("vgg16", jax.random.PRNGKey(1)), arch="vgg16")
cfg = TrainConfig(data="folder:" + sys.argv[1], net="tiny", image_size=32, style_size=64,
                  batch_size=4, steps=3, checkpoint_every=3, preview_every=3, log_every=1, lr=1e-2)
train.train_and_evaluate(cfg, sys.argv[2], sys.argv[3], vgg, progress=False)
print(json.dumps({"devices": jax.device_count()}))
"""


def test_four_devices_give_the_same_losses(data_dir, style_path, tmp_path):
    runs = {}
    for n in (1, 4):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
        work = tmp_path / f"d{n}"
        out = subprocess.run(
            [sys.executable, "-c", MULTI_DEVICE_SCRIPT, str(data_dir), str(work), str(style_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert json.loads(out.stdout.strip().splitlines()[-1])["devices"] == n
        runs[n] = read_metrics(work)
    for r1, r4 in zip(runs[1], runs[4], strict=True):
        for k in ("total", "content", "style"):
            assert r1[k] == pytest.approx(r4[k], rel=1e-4), (r1["step"], k)


# ---------------------------------------------------------------------------------------------
# train, export and apply through the command line.


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAXSTYLE_HOME": str(home), "HTTPS_PROXY": "http://127.0.0.1:9"}
    return subprocess.run(
        [sys.executable, "-m", "jaxstyle.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def assert_usage_error(out: subprocess.CompletedProcess, *fragments: str) -> None:
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, out.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory, vgg):
    """A private JAXSTYLE_HOME and a random-VGG16 weights file (no download possible)."""
    from jaxstyle import weights

    root = tmp_path_factory.mktemp("cli")
    wfile = root / "vgg16-random.safetensors"
    params = jax.tree_util.tree_map(np.asarray, vgg.params)
    weights.save(wfile, params, {"arch": "vgg16", "convention": "caffe", "source": "test"})
    return root, wfile


def test_cli_train_export_apply(cli_env, data_dir, style_path, tmp_path):
    home, wfile = cli_env
    work = tmp_path / "work"
    common = [
        "--data",
        f"folder:{data_dir}",
        "--net",
        "tiny",
        "--image-size",
        "32",
        "--style-size",
        "48",
        "--steps",
        "3",
        "--checkpoint-every",
        "3",
        "--log-every",
        "1",
        "-q",
    ]
    out = run_cli(
        "train",
        str(style_path),
        "--workdir",
        str(work),
        "--weights",
        str(wfile),
        *common,
        home=home,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(read_metrics(work)) == 3
    model = tmp_path / "model.safetensors"
    out = run_cli("export", str(work), "-o", str(model), home=home)
    assert out.returncode == 0, out.stderr[-3000:]
    src = next(data_dir.glob("*.png"))
    single = tmp_path / "one.png"
    out = run_cli("apply", str(model), str(src), "-o", str(single), "-q", home=home)
    assert out.returncode == 0, out.stderr[-3000:]
    assert Image.open(single).size == Image.open(src).size
    folder = tmp_path / "many"
    out = run_cli("apply", str(work), str(data_dir), "-o", str(folder), "-q", home=home)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(list(folder.glob("*.png"))) == len(list(data_dir.iterdir()))


def test_cli_train_apply_bad_inputs(cli_env, data_dir, style_path, tmp_path):
    home, wfile = cli_env
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    existing = tmp_path / "existing.png"
    Image.new("RGB", (8, 8)).save(existing)
    before = existing.read_bytes()
    src = str(next(data_dir.glob("*.png")))
    cases = [
        (
            [
                "train",
                str(tmp_path / "nope.jpg"),
                "--workdir",
                str(tmp_path / "w1"),
                "--data",
                f"folder:{data_dir}",
            ],
            ["nope.jpg"],
        ),
        (
            [
                "train",
                str(style_path),
                "--workdir",
                str(tmp_path / "w2"),
                "--data",
                f"folder:{tmp_path / 'missing'}",
                "--weights",
                str(wfile),
            ],
            ["missing"],
        ),
        (
            ["train", str(style_path), "--workdir", str(tmp_path / "w3"), "--data", "nope:x"],
            ["--data"],
        ),
        (["export", str(tmp_path), "-o", str(tmp_path / "m.safetensors")], ["config.json"]),
        (
            ["apply", str(tmp_path / "none.safetensors"), src, "-o", str(existing)],
            ["none.safetensors"],
        ),
        (["apply", str(junk), src, "-o", str(existing)], ["junk.safetensors"]),
        (["apply", str(junk), str(tmp_path / "gone.png"), "-o", str(existing)], ["gone.png"]),
        (["apply", str(junk), src, "-o", str(tmp_path / "out.xyz")], ["out.xyz"]),
    ]
    for args, fragments in cases:
        assert_usage_error(run_cli(*args, home=home), *fragments)
    assert existing.read_bytes() == before
