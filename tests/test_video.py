"""``jaxstyle video`` and :mod:`jaxstyle.video`.

The clips are made here: a few frames of a crop of scikit-image's astronaut moving 3 px a frame,
written by the ffmpeg of imageio-ffmpeg at a known rate, one with an AAC tone from ffmpeg's sine
source. They go through a tiny feed-forward network (frame count, size, exact rate and audio
come out equal; each frame equals the network applied to it alone) and through Gatys with the
real VGG16 (``real_weights``), with and without the temporal term. The CLI runs in-process
(``jaxstyle.cli.main``), so the runs share compiled programs; the bad inputs fail before any
work, in one line, with exit status 2 and nothing written.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("imageio_ffmpeg", reason="the video extra (imageio-ffmpeg) is absent")
pytest.importorskip("cv2", reason="the video extra (opencv-python-headless) is absent")

import imageio_ffmpeg  # noqa: E402

import jaxstyle  # noqa: E402
from jaxstyle import cli, models, video  # noqa: E402

STEP = 3  # pixels the view moves a frame


def frames_of(n: int, w: int, h: int) -> list[np.ndarray]:
    """``n`` crops ``w`` x ``h`` of the astronaut (at half size), each STEP px right of the last."""
    from skimage import data

    img = data.astronaut()[::2, ::2]
    return [
        np.ascontiguousarray(img[60 : 60 + h, 70 + STEP * t : 70 + STEP * t + w]) for t in range(n)
    ]


def write_clip(path: Path, frames: list[np.ndarray], fps, audio: bool = False) -> Path:
    """A near-lossless H.264 clip (4:4:4, CRF 10) of ``frames``; ``audio``: with a 440 Hz tone."""
    h, w = frames[0].shape[:2]
    target = path.with_suffix(".silent.mp4") if audio else path
    gen = imageio_ffmpeg.write_frames(
        str(target), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv444p", quality=None,
        macro_block_size=1, ffmpeg_log_level="error", output_params=["-crf", "10"],
    )  # fmt: skip
    gen.send(None)
    for f in frames:
        gen.send(f)
    gen.close()
    if audio:
        seconds = len(frames) / float(fps)
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-i", str(target)]
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
        cmd += ["-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", str(path)]
        subprocess.run(cmd, check=True, capture_output=True)
        target.unlink()
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "audio": write_clip(d / "pan.mp4", frames_of(5, 64, 48), 12, audio=True),
        # An odd size at an NTSC rate: neither may change on the way through.
        "odd": write_clip(d / "odd.mkv", frames_of(4, 63, 47), Fraction(30000, 1001)),
        "three": write_clip(d / "three.mp4", frames_of(3, 64, 48), 12),
    }


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A tiny Johnson network with random weights (its output depends on its input).

    Drawn to the shapes of ``init_params`` (``jax.eval_shape``, 0.3 s) instead of running flax's
    initialiser (17 s on 2 cores).
    """
    from jaxstyle.nets import transformer_net as tn

    rng = np.random.default_rng(1)
    shapes = jax.eval_shape(lambda: tn.init_params(tn.TINY, jax.random.PRNGKey(0)))

    def draw(path, leaf):
        name, shape = path[-1].key, leaf.shape
        if name == "kernel":  # LeCun-normal, as flax's default
            return rng.standard_normal(shape).astype(np.float32) / np.sqrt(np.prod(shape[:-1]))
        mean = 1.0 if name == "scale" else 0.0
        return (mean + 0.2 * rng.standard_normal(shape)).astype(np.float32)

    params = jax.tree_util.tree_map_with_path(draw, shapes)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return models.save_model(path, params, tn.TINY, {"style": "candy.jpg"})


@pytest.fixture(autouse=True)
def session_compile_cache(monkeypatch):
    """The CLI would point JAX's compilation cache at $JAXSTYLE_HOME; the tests keep conftest's."""
    monkeypatch.setattr(cli, "enable_compile_cache", lambda: None)


def decoded(path: Path) -> list[np.ndarray]:
    return list(video.read_frames(video.probe(path)))


def run(*argv) -> int:
    return cli.main(["video", *map(str, argv)])


# ---------------------------------------------------------------------------------------------
# Feed-forward.


@pytest.mark.parametrize("clip", ["audio", "odd"])
def test_feed_forward_keeps_frames_size_rate_and_audio(clips, model_file, tmp_path, clip):
    src = video.probe(clips[clip])
    out = tmp_path / f"out{clips[clip].suffix}"
    report = tmp_path / "run.json"
    assert run(clips[clip], "-o", out, "--model", model_file, "--batch-size", 2, "-q",
               "--report", report) == 0  # fmt: skip
    got = video.probe(out)
    assert (got.width, got.height, got.fps) == (src.width, src.height, src.fps)
    assert got.fps == (Fraction(12) if clip == "audio" else Fraction(30000, 1001))
    assert got.audio == src.audio == ("aac" if clip == "audio" else None)
    frames_in, frames_out = decoded(clips[clip]), decoded(out)
    assert len(frames_out) == len(frames_in) == {"audio": 5, "odd": 4}[clip]
    # Each output frame is its own input's (feed_forward_video's exactness is tested below; here
    # H.264 at CRF 18 on a random network's noisy colours: about 4 levels of luma against 40 for
    # the neighbouring frame's output).
    model = jaxstyle.load_model(model_file)
    luma = np.array([0.299, 0.587, 0.114])
    want = [video.to_uint8(model(x)) @ luma for x in frames_in]
    for t, y in enumerate(frames_out):
        assert np.abs(y @ luma - want[t]).mean() < 8.0 < np.abs(y @ luma - want[t - 1]).mean()
    record = json.loads(report.read_text())
    assert record["summary"]["frames"] == len(frames_in)
    assert all(math.isfinite(r["flicker"]) for r in record["frames"][1:])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, report.name])


def test_feed_forward_batches_share_one_program(model_file):
    """Frames run in batches equal the network on each frame alone, and a second clip compiles
    nothing: the last, partial batch is padded to the batch's shape."""
    model = jaxstyle.load_model(model_file)
    request = jaxstyle.api.check_apply(
        "johnson", "tiny", [np.zeros((48, 64, 3), np.uint8)] * 2, batch_size=2, bucket=4
    )  # as the CLI's
    clip = frames_of(5, 64, 48)

    def go(n):
        written = []
        video.feed_forward_video(
            iter(clip[:n]), written.append, model, request, work_shape=(48, 64),
            out_shape=(48, 64),
        )  # fmt: skip
        return written

    go(2)  # compiles the full batch's program
    traces = []

    def listen(event, seconds, **_):
        if event == "/jax/core/compile/jaxpr_trace_duration":
            traces.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        outs = go(5)  # batches of 2, 2 and 1 (padded to 2)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert traces == []
    # Exactly the network applied to each frame alone, the padded last batch included.
    for x, y in zip(clip, outs, strict=True):
        np.testing.assert_allclose(y, model(x), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Flow, warp, consistency, flicker (against hand computations).


def test_warp_consistency_and_flicker_of_a_translation():
    rng = np.random.default_rng(0)
    img = rng.random((20, 30, 3)).astype(np.float32)
    back = np.zeros((20, 30, 2), np.float32)
    back[..., 0] = 2.0  # frame t at p shows frame t-1 at p + (2, 0)
    warped = video.warp(img, back)
    np.testing.assert_allclose(warped[:, :-2], img[:, 2:], atol=1e-6)
    fwd = -back
    mask = video.consistency(fwd, back)
    assert mask[:, :-2].all() and not mask[:, -2:].any()  # the last columns come from outside
    # Forward flow that disagrees (nothing moved) makes every pixel inconsistent.
    assert not video.consistency(np.zeros_like(back), back).any()
    # A motion boundary: the left half moves, the right half does not.
    step = back.copy()
    step[:, 15:] = 0.0
    edge = video.consistency(-step, step)
    assert not edge[:, 13:16].any() and edge[:, 5:10].all() and edge[:, 20:].all()
    # Flicker: the warped previous output itself gives 0; a constant offset of 0.1 gives 25.5.
    assert video.flicker(warped, img, back, mask) == 0.0
    assert video.flicker(np.clip(warped + 0.1, 0, 2), img, back, mask) == pytest.approx(25.5)
    assert math.isnan(video.flicker(warped, img, back, np.zeros_like(mask)))


def test_dis_flow_finds_the_pan():
    a, b = (f.astype(np.float32) / 255 for f in frames_of(2, 64, 48))
    flow = video.Flow()
    back = flow(b, a)
    assert np.median(back[..., 0]) == pytest.approx(STEP, abs=0.1)
    assert np.median(back[..., 1]) == pytest.approx(0.0, abs=0.1)
    mask = video.consistency(flow(a, b), back)
    assert 0.85 < mask.mean() < 1.0
    # The input clip flickers very little once warped: the flow explains the motion.
    assert video.flicker(b, a, back, mask) < 2.0 < video.flicker(b, a, np.zeros_like(back), mask)


def test_exact_frame_rates():
    assert video.exact_fps(29.97) == Fraction(30000, 1001)
    assert video.exact_fps(23.98) == Fraction(24000, 1001)
    assert video.exact_fps(59.94) == Fraction(60000, 1001)
    assert video.exact_fps(25.0) == 25 and video.exact_fps(12.5) == Fraction(25, 2)
    with pytest.raises(ValueError):
        video.exact_fps(0.0)


def test_temporal_objective_adds_the_weighted_masked_error():
    from jaxstyle.gatys.objective import objective
    from jaxstyle.nets import vgg

    rng = np.random.default_rng(0)
    # The loss reads relu1_1 only: conv1_1 is all the network it needs.
    conv = {"kernel": rng.standard_normal((3, 3, 3, 64)).astype(np.float32), "bias": np.zeros(64)}
    net = vgg.VGGNet(params={"conv1_1": conv}, arch="vgg16", convention="caffe")
    x, prev = (rng.random((32, 32, 3)).astype(np.float32) for _ in range(2))
    c = (rng.random((32, 32, 1)) > 0.5).astype(np.float32)
    layers = ("relu1_1",)
    feats = net.features(jax.numpy.asarray(x)[None], layers)
    content_t = {"relu1_1": feats["relu1_1"]}
    style_g = {"relu1_1": jax.numpy.zeros((1, 64, 64))}
    # The style term (about 1.8e5 here) weighted 1e-4 so the temporal part stands out in float32.
    weights = {
        "content": 0.5, "style": 1e-4, "tv": 0.0, "layers": jax.numpy.ones(1),
        "blend": jax.numpy.ones(1),
    }  # fmt: skip
    aux = {
        video.AUX_WARPED: prev,
        video.AUX_CONSISTENCY: c,
        video.AUX_WEIGHT: np.full((32, 32, 1), 7.0, np.float32),
    }
    base, _ = objective(x, net, content_t, style_g, weights, layers, layers)
    total, terms = video.temporal_objective(
        x, net, {**content_t, **aux}, style_g, weights, layers, layers
    )
    want = np.sum(c * (x - prev) ** 2) / x.size
    assert float(terms["temporal"]) == pytest.approx(want, rel=1e-5)
    assert float(total) - float(base) == pytest.approx(7.0 * want, rel=1e-4)
    assert float(terms["total"]) == float(total)


# ---------------------------------------------------------------------------------------------
# Gatys with the temporal term.


#: Far above the default (measured in README, "Video"): 6 iterations a frame then show the
#: effect clearly (flicker 8.6 -> 2.4 measured; the default's effect needs more iterations).
WEIGHT = 1e9


@pytest.mark.real_weights
def test_temporal_term_lowers_flicker_and_frames_reuse_programs(clips, vgg16_path, tmp_path):
    records = {}
    for weight in (0.0, WEIGHT):
        out = tmp_path / f"w{weight:g}.mp4"
        report = tmp_path / f"w{weight:g}.json"
        argv = [clips["three"], "-o", out, "--style", clips_style(tmp_path), "--iterations", 8]
        # Layers up to relu3_1 only: a third of VGG16 to compile, the same temporal mechanism.
        argv += ["--style-layers", "relu1_1,relu2_1,relu3_1", "--content-layers", "relu3_1"]
        argv += ["--iterations-next", 6, "--temporal-weight", weight, "--report", report, "-q"]
        assert run(*argv) == 0
        records[weight] = json.loads(report.read_text())
        src, got = video.probe(clips["three"]), video.probe(out)
        assert (got.width, got.height, got.fps) == (src.width, src.height, src.fps)
        assert len(decoded(out)) == 3
    off, on = records[0.0], records[WEIGHT]
    # Frame 1 has no previous frame: the same in both runs.
    assert off["frames"][0]["total"] == pytest.approx(on["frames"][0]["total"], rel=1e-5)
    assert on["summary"]["flicker_mean"] < 0.6 * off["summary"]["flicker_mean"]
    pairs = zip(on["frames"][1:], off["frames"][1:], strict=True)
    assert all(r["temporal"] < q["temporal"] for r, q in pairs)
    # Frames after the first, and the whole second run (another weight), compile nothing.
    assert all(r["compile_seconds"] == 0.0 for r in off["frames"][1:] + on["frames"])
    assert [r["iterations"] for r in on["frames"]] == [8, 6, 6]


def clips_style(tmp_path: Path) -> Path:
    from skimage import data

    from jaxstyle import images as imlib

    path = tmp_path / "style.png"
    if not path.exists():
        imlib.save_image(path, data.coffee()[::8, ::8] / 255.0)
    return path


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written.


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    text = d / "notes.mp4"
    text.write_text("not a video\n")
    garbage = d / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    tone = d / "tone.m4a"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi"]
    subprocess.run([*cmd, "-i", "sine=duration=0.2", str(tone)], check=True, capture_output=True)
    return {"text": text, "garbage": garbage, "tone": tone}


def bad_cases(clips, model_file, bad, style):
    return {
        "unreadable": ([bad["text"], "--model", model_file], "not a readable video"),
        "missing": ([bad["text"].with_name("nope.mp4"), "--model", model_file], "no such file"),
        "audio only": ([bad["tone"], "--model", model_file], "tone.m4a: holds no video stream"),
        "no mode": ([clips["audio"]], "give --model MODEL"),
        "gatys flag with a model": (
            [clips["audio"], "--model", model_file, "--iterations", 5],
            "--iterations is for Gatys runs",
        ),
        "model flag with gatys": (
            [clips["audio"], "--style", style, "--batch-size", 2],
            "--batch-size is for --model runs",
        ),
        "negative temporal weight": (
            [clips["audio"], "--style", style, "--temporal-weight", -1],
            "--temporal-weight must be a finite number >= 0",
        ),
        "style flag for a johnson model": (
            [clips["audio"], "--model", model_file, "--style", style],
            "--style is for AdaIN models",
        ),
        "missing model": ([clips["audio"], "--model", bad["text"].with_name("m.st")], "m.st"),
        "bad weights file": (
            [clips["audio"], "--style", style, "--weights", bad["garbage"]],
            "garbage.safetensors",
        ),
    }


BAD_CASES = (
    "unreadable",
    "missing",
    "audio only",
    "no mode",
    "gatys flag with a model",
    "model flag with gatys",
    "negative temporal weight",
    "style flag for a johnson model",
    "missing model",
    "bad weights file",
)


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_exit_2_nothing_written(
    clips, model_file, bad_files, tmp_path, capsys, case
):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv, message = bad_cases(clips, model_file, bad_files, clips_style(tmp_path))[case]
    assert run(argv[0], "-o", out_dir / "o.mp4", *argv[1:], "-q") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert list(out_dir.iterdir()) == []


def test_output_must_not_be_the_input_nor_an_image(clips, model_file, tmp_path, capsys):
    copy = tmp_path / "in.mp4"
    copy.write_bytes(clips["audio"].read_bytes())
    before = copy.read_bytes()
    assert run(copy, "-o", copy, "--model", model_file, "-q") == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert copy.read_bytes() == before
    assert run(copy, "-o", tmp_path / "o.png", "--model", model_file, "-q") == 2
    assert ".mp4, .mkv, .mov" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_without_the_extra_one_line_names_the_install(
    clips, model_file, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 fails as if not installed
    assert run(clips["audio"], "-o", tmp_path / "o.mp4", "--model", model_file) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['error: video needs cv2: pip install "jaxstyle[video]"']
    assert list(tmp_path.iterdir()) == []
