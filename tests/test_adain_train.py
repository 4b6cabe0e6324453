"""Tests for AdaIN training (jaxstyle.train_adain, ``jaxstyle train-adain``) and the vgg16
encoder of jaxstyle.nets.adain.

Training runs on 32 px crops of 48 px resizes of a few generated images, batch 2, with VGG16
weights of the right shapes drawn at random (training mechanics do not depend on their values);
the encoder's equality with jaxstyle's VGG16 uses the real weights when cached. The loss is
checked against the PyTorch port's formula run in torch when torch is installed.
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

from jaxstyle import models, train, train_adain
from jaxstyle.configs import AdainTrainConfig
from jaxstyle.nets import adain
from jaxstyle.nets import vgg as vgg_lib
from jaxstyle.nets.vgg import VGGNet


@pytest.fixture(scope="module")
def vgg() -> VGGNet:
    """VGG16 with random weights (scaled so activations stay near 1 in magnitude)."""
    params = vgg_lib.init_params("vgg16", jax.random.PRNGKey(1))
    return VGGNet(params=params, arch="vgg16", convention="torchvision")


def _write_images(folder: Path, n: int, seed: int, smooth: bool) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = 40 + 8 * i, 56 - 4 * i
        if smooth:  # photo-like: smooth gradients and a disc
            yy, xx = np.mgrid[:h, :w] / max(h, w)
            arr = np.stack([yy, xx, (xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.1], -1) * 0.8
            arr = arr + rng.random(3) * 0.2
        else:  # painting-like: strong colour noise
            arr = rng.random((h, w, 3)) ** (1 + i)
        Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adain-data")
    return _write_images(root / "content", 4, 0, True), _write_images(root / "style", 3, 1, False)


def tiny_config(folders, **kw) -> AdainTrainConfig:
    content, style = folders
    base = dict(
        data=f"folder:{content}",
        styles=f"folder:{style}",
        image_size=32,
        load_size=48,
        batch_size=2,
        steps=6,
        lr=1e-3,
        checkpoint_every=3,
        preview_every=3,
        log_every=1,
    )
    base.update(kw)
    return AdainTrainConfig(**base)


def read_metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# The vgg16 encoder.


def test_vgg16_layout_and_decoder_mirror():
    shapes = adain.param_shapes("vgg16")
    assert list(shapes["vgg"]) == ["0", "2", "5", "9", "12", "16", "19", "22", "26"]
    assert list(shapes["decoder"]) == ["1", "5", "8", "11", "15", "18", "22", "25"]
    assert adain.param_shapes() == adain.param_shapes("vgg19")  # the default is unchanged
    p = adain.init_params(0, "vgg16")
    assert adain.encoder_of(p["vgg"]) == "vgg16"
    assert adain.encoder_of(p["decoder"], "decoder") == "vgg16"
    assert adain.encoder_of(adain.init_params(0)["vgg"]) == "vgg19"
    x = jnp.full((1, 40, 24, 3), 0.5)
    f = adain.encode(p["vgg"], x)
    assert f.shape == (1, 5, 3, 512)
    assert adain.decode(p["decoder"], f).shape == (1, 40, 24, 3)
    feats = adain.encode_features(p["vgg"], x)
    assert [v.shape[1:] for v in feats.values()] == [
        (40, 24, 64),
        (20, 12, 128),
        (10, 6, 256),
        (5, 3, 512),
    ]
    assert jnp.array_equal(feats["relu4_1"], f)
    with pytest.raises(ValueError, match="no known encoder"):
        adain.encoder_of({"0": None, "2": None})


#: Border pixels that reflection padding (here) and zero padding (jaxstyle's VGG) change: one
#: per 3x3 convolution at each resolution, halved (rounding up) by each pooling.
MARGINS = {"relu1_1": 1, "relu2_1": 2, "relu3_1": 3, "relu4_1": 4}


def _compare_interior(enc: dict, net: VGGNet, x: jax.Array) -> None:
    ours = adain.encode_features(enc, x, "vgg16")
    ref = net.features(x, adain.FEATURE_LAYERS)
    for name, m in MARGINS.items():
        a, b = np.asarray(ours[name]), np.asarray(ref[name])
        assert a.shape == b.shape
        scale = np.abs(b).max()
        inner = np.abs(a - b)[:, m:-m, m:-m]
        assert inner.max() <= 1e-5 * scale, (name, inner.max(), scale)
        assert np.abs(a - b).max() > 1e-3 * scale, name  # the borders do differ: padding


def test_vgg16_encoder_equals_jaxstyle_vgg16(vgg16):
    from jaxstyle.demo import draw_landscape

    enc = adain.encoder_from_vgg(vgg16.params, "vgg16", vgg16.convention)
    assert vgg16.convention == "caffe"
    x = jnp.asarray(draw_landscape(128, 96)[None].astype(np.float32))  # relu4_1: 12x16
    _compare_interior(enc, vgg16, x)


def test_encoder_folds_the_torchvision_convention(vgg):
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 80, 96, 3))
    _compare_interior(adain.encoder_from_vgg(vgg.params, "vgg16", vgg.convention), vgg, x)


def test_vgg19_encoder_from_vgg_normalised_is_the_ports(tmp_path):
    # --encoder vgg19 --weights vgg_normalised.pth: load_vgg reads it with its own input
    # convolution ("normalised"), which becomes the encoder's 1x1: the port's encoder exactly.
    torch = pytest.importorskip("torch")
    from experiments.lib.torch_adain import adain_modules
    from jaxstyle.weights import load_vgg
    from jaxstyle.weights.adain import convert_part

    tvgg, _ = adain_modules(seed=1)
    path = tmp_path / "vgg_normalised.pth"
    torch.save(tvgg.state_dict(), path)
    net = load_vgg("vgg19", "max", str(path), progress=False)
    enc = adain.encoder_from_vgg(net.params, "vgg19", net.convention)
    ref = convert_part({k: v.numpy() for k, v in tvgg.state_dict().items()}, "vgg")[0]
    assert jax.tree_util.tree_structure(enc) == jax.tree_util.tree_structure(ref)
    for a, b in zip(jax.tree_util.tree_leaves(enc), jax.tree_util.tree_leaves(ref), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)


# ---------------------------------------------------------------------------------------------
# The loss against the port's, in torch.


def test_loss_matches_the_pytorch_port(folders):
    torch = pytest.importorskip("torch")
    from experiments.lib.torch_adain import _mean_std, adain_modules, to_nchw
    from jaxstyle.weights.adain import convert_part

    tvgg, tdec = adain_modules(seed=3)
    params = {
        part: convert_part({k: v.numpy() for k, v in m.state_dict().items()}, part)[0]
        for part, m in (("vgg", tvgg), ("decoder", tdec))
    }
    rng = np.random.default_rng(0)
    content = rng.random((2, 32, 40, 3), np.float32)
    style = rng.random((2, 32, 40, 3), np.float32)
    w = {"content": jnp.float32(1.0), "style": jnp.float32(10.0)}
    total, terms = jax.jit(train_adain.loss_fn, static_argnames="encoder")(
        params["decoder"], params["vgg"], content, style, w, encoder="vgg19"
    )
    # The port's net.py: encode_with_intermediate, calc_content_loss, calc_style_loss.
    slices = [tvgg[:4], tvgg[4:11], tvgg[11:18], tvgg[18:31]]

    def feats(x):
        out = []
        for s in slices:
            x = s(x)
            out.append(x)
        return out

    mse = torch.nn.functional.mse_loss
    with torch.no_grad():
        s_feats = feats(to_nchw(style))
        c = feats(to_nchw(content))[-1]
        cm, cs = _mean_std(c)
        sm, ss = _mean_std(s_feats[-1])
        t = (c - cm) / cs * ss + sm
        g_feats = feats(tdec(t))
        loss_c = mse(g_feats[-1], t)
        loss_s = sum(
            mse(_mean_std(g)[0], _mean_std(s)[0]) + mse(_mean_std(g)[1], _mean_std(s)[1])
            for g, s in zip(g_feats, s_feats, strict=True)
        )
    assert float(terms["content"]) == pytest.approx(float(loss_c), rel=1e-4)
    assert float(terms["style"]) == pytest.approx(float(loss_s), rel=1e-4)
    assert float(total) == pytest.approx(float(loss_c + 10 * loss_s), rel=1e-4)


def test_lr_schedule_is_the_ports_decay():
    cfg = AdainTrainConfig(styles="folder:x", lr=1e-4, lr_decay=5e-5)
    tx = train_adain.make_optimizer(cfg)
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    for k in range(3):
        # Adam's first update is -lr * sign(g); later ones follow the schedule at their count.
        updates, state = tx.update({"w": jnp.ones(())}, state, params)
        assert float(updates["w"]) == pytest.approx(-1e-4 / (1 + 5e-5 * k), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Training.


def test_decoder_trains_and_loss_falls(vgg, folders, tmp_path):
    cfg = tiny_config(folders, steps=20, checkpoint_every=20, preview_every=10)
    last = train_adain.train_and_evaluate(cfg, tmp_path / "w", vgg, progress=False)
    assert last["step"] == 20
    m = read_metrics(tmp_path / "w")
    first, final = np.mean([r["total"] for r in m[:3]]), np.mean([r["total"] for r in m[-3:]])
    assert final < 0.5 * first, (first, final)
    assert sorted(p.name for p in (tmp_path / "w" / "previews").iterdir()) == [
        "step_000010.png",
        "step_000020.png",
    ]
    # Contents, styles and outputs: three rows of four (the batch is 2: two of each).
    assert Image.open(tmp_path / "w" / "previews" / "step_000020.png").size == (64, 96)
    saved = json.loads((tmp_path / "w" / "config.json").read_text())
    assert saved["kind"] == "adain" and saved["encoder"] == "vgg16"
    assert models.workdir_kind(tmp_path / "w") == "adain"


def test_stopped_run_resumes_identically(vgg, folders, tmp_path):
    cfg = tiny_config(folders, steps=6, checkpoint_every=3)
    whole = tmp_path / "whole"
    train_adain.train_and_evaluate(cfg, whole, vgg, progress=False)
    parts = tmp_path / "parts"
    # A shorter first run ends with a checkpoint at step 4, past the step-3 one, as an
    # interrupted run does; --steps may change on resumption.
    first = train_adain.train_and_evaluate(
        dataclasses.replace(cfg, steps=4), parts, vgg, progress=False
    )
    assert first["step"] == 4 and first["interrupted"] is False
    train_adain.train_and_evaluate(cfg, parts, vgg, progress=False)
    a, b = read_metrics(whole), read_metrics(parts)
    assert [r["step"] for r in b] == list(range(1, 7))
    for ra, rb in zip(a, b, strict=True):
        for k in ("total", "content", "style"):
            assert ra[k] == rb[k], (ra["step"], k)
    pa, ma = train_adain.restore_params(whole)
    pb, mb = train_adain.restore_params(parts)
    assert ma["step"] == mb["step"] == 6
    for x, y in zip(jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pb), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_refuses_other_settings_or_encoder(vgg, folders, tmp_path):
    cfg = tiny_config(folders, steps=1, checkpoint_every=1)
    work = tmp_path / "w"
    train_adain.train_and_evaluate(cfg, work, vgg, progress=False)
    more = dataclasses.replace(cfg, steps=2)
    with pytest.raises(train.TrainError, match="style_weight"):
        train_adain.train_and_evaluate(
            dataclasses.replace(more, style_weight=3.0), work, vgg, progress=False
        )
    other = vgg.replace(params=vgg_lib.init_params("vgg16", jax.random.PRNGKey(2)))
    with pytest.raises(train.TrainError, match="other vgg16 encoder weights"):
        train_adain.train_and_evaluate(more, work, other, progress=False)
    with pytest.raises(train.TrainError, match="needs vgg19 weights"):
        train_adain.train_and_evaluate(
            dataclasses.replace(cfg, encoder="vgg19"), tmp_path / "w2", vgg, progress=False
        )
    # A Johnson workdir is neither resumed nor exported as AdaIN.
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "config.json").write_text(json.dumps({"style": "s.png"}))
    with pytest.raises(train.TrainError, match="not an AdaIN training workdir"):
        train_adain.restore_params(tmp_path / "j")


def test_export_loads_and_applies(vgg, folders, tmp_path):
    from jaxstyle import inference

    cfg = tiny_config(folders, steps=2, checkpoint_every=2)
    work = tmp_path / "w"
    train_adain.train_and_evaluate(cfg, work, vgg, progress=False)
    out = train_adain.export(work, tmp_path / "m.safetensors")
    kind, params, config, meta = models.load_model(out)
    assert (kind, config, meta["encoder"], meta["steps"]) == ("adain", None, "vgg16", "2")
    assert json.loads(meta["training"])["style_weight"] == cfg.style_weight
    restored, _ = train_adain.restore_params(work)
    for x, y in zip(
        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(restored), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    content = np.random.default_rng(0).random((27, 35, 3), np.float32)
    style = np.random.default_rng(1).random((30, 30, 3), np.float32)
    (y,) = inference.apply_adain(params, [content], [style], alpha=0.5)
    assert y.shape == content.shape and y.min() >= 0.0 and y.max() <= 1.0
    # The file's encoder decides the shapes it is checked against.
    from safetensors.numpy import load_file, save_file

    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(out)), str(bad), metadata={**meta, "encoder": "vgg19"})
    with pytest.raises(models.ModelError, match="do not match"):
        models.load_model(bad)
    with pytest.raises(train.TrainError, match="no config.json"):
        train_adain.export(tmp_path, tmp_path / "m2.safetensors")


# ---------------------------------------------------------------------------------------------
# The command line.


@pytest.fixture
def cli_main(tmp_path, monkeypatch, capsys):
    """``cli.main`` in this process, with a private JAXSTYLE_HOME that cannot download."""
    from jaxstyle import cli

    monkeypatch.setenv("JAXSTYLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    saved = {k: getattr(jax.config, k) for k in keys}

    def run(*args: str) -> tuple[int, str]:
        try:
            code = cli.main(list(args))
        except SystemExit as e:  # argparse
            code = e.code
        return code, capsys.readouterr().err

    yield run
    for k, v in saved.items():
        jax.config.update(k, v)


@pytest.fixture(scope="module")
def weights_file(vgg, tmp_path_factory) -> Path:
    from jaxstyle import weights

    path = tmp_path_factory.mktemp("w") / "vgg16-random.safetensors"
    params = jax.tree_util.tree_map(np.asarray, vgg.params)
    weights.save(path, params, {"arch": "vgg16", "convention": "torchvision", "source": "test"})
    return path


def test_cli_train_adain_and_export(cli_main, folders, weights_file, tmp_path):
    content, style = folders
    work = tmp_path / "work"
    args = ["train-adain", "--workdir", str(work), "--weights", str(weights_file), "-q"]
    args += ["--data", f"folder:{content}", "--styles", f"folder:{style}", "--image-size", "32"]
    args += ["--load-size", "48", "--batch-size", "2", "--steps", "2", "--log-every", "1"]
    code, err = cli_main(*args)
    assert code == 0, err[-3000:]
    assert [r["step"] for r in read_metrics(work)] == [1, 2]
    params, meta = train_adain.restore_params(work)
    assert meta["step"] == 2 and adain.encoder_of(params["vgg"]) == "vgg16"
    # export and apply take the workdir as they take a Johnson one.
    model = tmp_path / "adain.safetensors"
    code, err = cli_main("export", str(work), "-o", str(model))
    assert code == 0, err[-3000:]
    assert models.load_model(model)[3]["encoder"] == "vgg16"
    src, sty = next(content.iterdir()), next(style.iterdir())
    for source in (work, model):
        out = tmp_path / f"out_{source.name}.png"
        code, err = cli_main("apply", str(source), str(src), "-o", str(out), "--style", str(sty))
        assert code == 0, err[-3000:]
    a, b = (np.asarray(Image.open(tmp_path / f"out_{n}.png")) for n in (work.name, model.name))
    np.testing.assert_array_equal(a, b)
    code, err = cli_main("apply", str(work), str(src), "-o", str(out), "--style-index", "0")
    assert code == 2 and "--style-index is for multi-style" in err, err


def test_cli_train_adain_bad_inputs(cli_main, folders, weights_file, tmp_path):
    content, style = folders
    (tmp_path / "file").write_text("")
    ok = ["--data", f"folder:{content}", "--weights", str(weights_file)]
    styles = ["--styles", f"folder:{style}"]
    cases = [
        (["--workdir", str(tmp_path / "w1"), *ok], ["--styles is required"]),
        (
            ["--workdir", str(tmp_path / "w2"), *ok, "--styles", f"folder:{tmp_path / 'none'}"],
            ["--styles", "none", "does not exist"],
        ),
        (
            ["--workdir", str(tmp_path / "w3"), *ok, "--styles", f"folder:{tmp_path}/file"],
            ["--styles", "is not a folder"],
        ),
        (
            ["--workdir", str(tmp_path / "w4"), *styles, "--data", f"folder:{tmp_path / 'gone'}"],
            ["--data", "gone"],
        ),
        (["--workdir", str(tmp_path / "w5"), *styles, "--data", "nope:x"], ["--data"]),
        (["--workdir", str(tmp_path / "file" / "w"), *ok, *styles], [str(tmp_path / "file")]),
        (["--workdir", str(tmp_path / "w6"), *ok, *styles, "--lr", "nan"], ["--lr", "finite"]),
        (["--workdir", str(tmp_path / "w7"), *ok, *styles, "--image-size", "20"], ["multiple"]),
        (["--workdir", str(tmp_path / "w8"), *ok, *styles, "--load-size", "8"], ["--load-size"]),
        (["--workdir", str(tmp_path / "w9"), *ok, *styles, "--lr-decay", "-1"], ["--lr-decay"]),
    ]
    for args, fragments in cases:
        code, err = cli_main("train-adain", *args)
        assert code == 2, (args, err[-2000:])
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in err, err
        for f in fragments:
            assert f in lines[0], (f, lines[0])
    # Refused settings and sources leave no workdir behind.
    assert not any((tmp_path / f"w{i}").exists() for i in range(1, 10))
    # An unknown encoder is argparse's error (exit 2, one line naming the flag).
    code, err = cli_main("train-adain", "--workdir", str(tmp_path / "w"), "--encoder", "vgg11")
    assert code == 2 and "--encoder" in err.splitlines()[-1]
