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


@pytest.fixture(scope="module")
def vgg() -> VGGNet:
    """VGG16 with random weights: training mechanics do not depend on the weights' values."""
    return VGGNet(params=vgg_init("vgg16", jax.random.PRNGKey(1)), arch="vgg16")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Generated images and photos that ship with scikit-image (no ../shared needed)."""
    import skimage.data

    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for i in range(4):
        arr = (rng.random((48 + 8 * i, 40 + 4 * i, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"gen{i}.png")
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(skimage.data, name)()).resize((80, 60)).save(root / f"{name}.jpg")
    return root


@pytest.fixture(scope="module")
def style_path(tmp_path_factory) -> Path:
    from jaxstyle.demo import draw_style

    path = tmp_path_factory.mktemp("style") / "style.png"
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
    state = train.create_train_state(cfg, tx)
    grams = {
        n: jnp.eye(c) * 0.01 for n, c in zip(cfg.style_layers, (64, 128, 256, 512), strict=True)
    }
    weights = train.loss_weights(cfg)
    step = train.make_train_step(cfg, tx)
    batch = jnp.zeros((4, 32, 32, 3), jnp.uint8)
    donated = jax.tree_util.tree_leaves(state)
    state, _ = step(state, batch, vgg, grams, weights)
    # Donation: the old state's buffers were handed to the step, the other arguments were not.
    assert all(x.is_deleted() for x in donated)
    assert not batch.is_deleted() and not weights["style"].is_deleted()
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


def test_stopped_run_resumes_identically(vgg, data_dir, style_path, tmp_path):
    cfg = tiny_config(data_dir, steps=10, checkpoint_every=5)
    whole = tmp_path / "whole"
    train.train_and_evaluate(cfg, whole, str(style_path), vgg, progress=False)
    parts = tmp_path / "parts"
    # A shorter first run ends with a checkpoint at step 7, past the step-5 one, as an
    # interrupted run does; --steps may change on resumption.
    first = train.train_and_evaluate(
        dataclasses.replace(cfg, steps=7), parts, str(style_path), vgg, progress=False
    )
    assert first["step"] == 7 and first["interrupted"] is False
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


# ---------------------------------------------------------------------------------------------
# Never lose a run (issue 12, "Never lose a file" items 3 and 4).


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(
    vgg, data_dir, style_path, tmp_path
):
    # lr 1e20 (finite, so no validation refuses it): step 1 is computed from the initial
    # parameters and is finite, Adam's first update makes every later loss NaN. Before, six
    # checkpoints were saved and max_to_keep=3 kept only NaN states (4, 5, 6).
    cfg = tiny_config(data_dir, lr=1e20, steps=6, checkpoint_every=1, preview_every=100)
    work = tmp_path / "w"
    with pytest.raises(train.TrainError, match=r"diverged at step 2: the loss is nan") as e:
        train.train_and_evaluate(cfg, work, str(style_path), vgg, progress=False)
    assert "last good checkpoint (step 1)" in str(e.value) and str(work) in str(e.value)
    with train.Checkpoints(work / "checkpoints", create=False) as ckpts:
        assert ckpts.latest_step() == 1
    params, _, meta = train.restore_params(work)
    assert meta["step"] == 1 and bool(train.all_finite(params))


def test_nonfinite_state_is_never_saved(tmp_path):
    cfg = TrainConfig(net="tiny")
    state = train.create_train_state(cfg, train.make_optimizer(cfg))
    bad = state.replace(
        params=jax.tree_util.tree_map(lambda x: x.at[...].set(jnp.inf), state.params)
    )
    with train.Checkpoints(tmp_path / "c") as ckpts:
        ckpts.save(1, state, loss=1.0)
        # A finite loss does not make the state good: the parameters are checked too.
        with pytest.raises(train.TrainError, match="state holds NaN/inf.*step 1"):
            ckpts.save(2, bad, loss=1.0)
        assert ckpts.latest_step() == 1


def test_data_typo_writes_nothing_that_refuses_the_corrected_rerun(
    vgg, data_dir, style_path, tmp_path
):
    from jaxstyle.input_pipeline import DataError

    work = tmp_path / "w"
    typo = tiny_config(tmp_path / "no-such-folder", steps=2, checkpoint_every=2)
    with pytest.raises(DataError, match="no-such-folder"):
        train.train_and_evaluate(typo, work, str(style_path), vgg, progress=False)
    assert not (work / "config.json").exists()
    fixed = tiny_config(data_dir, steps=2, checkpoint_every=2)
    assert train.train_and_evaluate(fixed, work, str(style_path), vgg, progress=False)["step"] == 2
    assert json.loads((work / "config.json").read_text())["data"] == fixed.data


def test_half_written_metrics_line_does_not_block_resume(vgg, data_dir, style_path, tmp_path):
    cfg = tiny_config(data_dir, steps=2, checkpoint_every=2)
    work = tmp_path / "w"
    train.train_and_evaluate(cfg, work, str(style_path), vgg, progress=False)
    with open(work / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "total": 1.2')  # the run was killed mid-write
    last = train.train_and_evaluate(
        dataclasses.replace(cfg, steps=4), work, str(style_path), vgg, progress=False
    )
    assert last["step"] == 4
    assert [r["step"] for r in read_metrics(work)] == [1, 2, 3, 4]


@pytest.mark.parametrize("where", ["below-a-file", "checkpoints-is-a-file", "metrics-is-a-folder"])
def test_unwritable_workdir_fails_before_any_work(data_dir, tmp_path, where):
    if where == "below-a-file":
        (tmp_path / "file").write_text("")
        work, bad = tmp_path / "file" / "w", tmp_path / "file" / "w"
    else:
        work = tmp_path / "w"
        work.mkdir()
        bad = work / ("checkpoints" if where == "checkpoints-is-a-file" else "metrics.jsonl")
        bad.mkdir() if where == "metrics-is-a-folder" else bad.write_text("")
    cfg = tiny_config(data_dir)
    # Before any work: the style image (missing here) is not read, and no VGG is needed.
    with pytest.raises(train.TrainError, match=str(bad)):
        train.train_and_evaluate(cfg, work, str(tmp_path / "missing.png"), None, progress=False)


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
                  batch_size=4, steps=3, checkpoint_every=3, preview_every=3, log_every=1, lr=1e-3)
train.train_and_evaluate(cfg, sys.argv[2], sys.argv[3], vgg, progress=False)
print(json.dumps({"devices": jax.device_count()}))
"""


def test_four_devices_give_the_same_losses(data_dir, style_path, tmp_path):
    # The script's lr is small because Adam's first update is lr * sign(gradient): the float
    # noise of a sharded reduction flips the sign of near-zero gradients, and at lr 1e-2 that
    # alone moves the step-2 loss by ~4e-4 on these images.
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


@pytest.fixture
def cli_main(cli_env, monkeypatch, capsys):
    """``cli.main`` in this process (error paths gain nothing from a subprocess)."""
    from jaxstyle import cli

    home, _ = cli_env
    monkeypatch.setenv("JAXSTYLE_HOME", str(home))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    # `train` turns on the persistent compilation cache under JAXSTYLE_HOME: put it back.
    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    saved = {k: getattr(jax.config, k) for k in keys}

    def run(*args: str) -> tuple[int, str]:
        code = cli.main(list(args))
        return code, capsys.readouterr().err

    yield run
    for k, v in saved.items():
        jax.config.update(k, v)


def test_cli_train_apply_bad_inputs(cli_main, cli_env, data_dir, style_path, tmp_path):
    _, wfile = cli_env
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    existing = tmp_path / "existing.png"
    Image.new("RGB", (8, 8)).save(existing)
    before = existing.read_bytes()
    (tmp_path / "file").write_text("")
    src = str(next(data_dir.glob("*.png")))
    train_args = ["--data", f"folder:{data_dir}", "--weights", str(wfile)]
    cases = [
        (
            ["train", str(tmp_path / "nope.jpg"), "--workdir", str(tmp_path / "w1"), *train_args],
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
        (
            ["train", str(style_path), "--workdir", str(tmp_path / "file" / "w"), *train_args],
            [str(tmp_path / "file")],
        ),
        (
            ["train", str(style_path), "--workdir", str(tmp_path / "w4"), "--lr", "nan"],
            ["--lr", "not a finite number"],
        ),
        (
            ["train", str(style_path), "--workdir", str(tmp_path / "w5"), "--style-weight", "inf"],
            ["--style-weight", "not a finite number"],
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
        code, err = cli_main(*args)
        assert code == 2, (args, err[-2000:])
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in err, err
        for f in fragments:
            assert f in lines[0], lines[0]
    assert existing.read_bytes() == before
    # The --data typo wrote no config.json, which would refuse the corrected rerun.
    assert not (tmp_path / "w2" / "config.json").exists()
    # Refused settings leave no workdir behind.
    assert not (tmp_path / "w4").exists() and not (tmp_path / "w5").exists()
