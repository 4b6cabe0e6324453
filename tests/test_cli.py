"""End-to-end tests of the ``jaxstyle`` command line, run as a user would: in a subprocess.

Inputs are 64x48 images drawn by :mod:`jaxstyle.demo`, written into a temp dir. Every run gets
its own ``$JAXSTYLE_HOME`` (a temp dir where the cached real weights are symlinked when present)
and an unreachable HTTP proxy, so a test can never download anything.

The bad-input cases fail before anything is compiled (about a second each) and run
concurrently from one fixture; the runs that stylise need the real VGG16 weights
(``real_weights``), take 15-25 s each on two CPU cores, and skip with a reason without them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import offline_env

from jaxstyle import demo
from jaxstyle import images as imlib
from jaxstyle import weights as jw

REPO = Path(__file__).resolve().parents[1]
OLD_BYTES = b"an earlier output that must survive a failed run"
TIMEOUT = 300


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "jaxstyle.cli", *args]


@pytest.fixture(scope="module")
def real_weights() -> Path:
    path = jw.cache_path("vgg16")  # respects the outer $JAXSTYLE_HOME
    if not path.is_file():
        pytest.skip(f"real weights absent: {path} (fetched by .ci/run)")
    return path


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A private ``$JAXSTYLE_HOME`` holding links to whatever weights are really cached."""
    home = tmp_path_factory.mktemp("jaxstyle-home")
    (home / "weights").mkdir()
    real = jw.home() / "weights"
    for f in sorted(real.glob("*.safetensors")) if real.is_dir() else []:
        (home / "weights" / f.name).symlink_to(f)
    return home


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Good and bad input files, made here."""
    d = tmp_path_factory.mktemp("inputs")
    land = demo.draw_landscape(64, 48)
    files = {
        "content": imlib.save_image(d / "land.png", land),
        "content2": imlib.save_image(d / "land_flipped.png", land[:, ::-1]),
        "style": imlib.save_image(d / "strokes.png", demo.draw_style(64)),
        "tiny": imlib.save_image(d / "tiny.png", np.full((1, 1, 3), 0.5, np.float32)),
        "strip": imlib.save_image(d / "strip.png", np.full((8, 200, 3), 0.5, np.float32)),
    }
    files["text"] = d / "notes.jpg"
    files["text"].write_text("not a picture\n")
    data = files["content"].read_bytes()
    files["truncated"] = d / "cut.png"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["empty_dir"] = d / "no_images"
    files["empty_dir"].mkdir()
    (files["empty_dir"] / "readme.txt").write_text("nothing to see")
    return files


def run_cli(home: Path, cwd: Path, *args: str, timeout: float = TIMEOUT):
    return subprocess.run(
        cli_cmd(*args),
        cwd=cwd,
        env=offline_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def leftovers(folder: Path) -> list[str]:
    """Temporary files of atomic writes (``.NAME.*.part``) left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


# ---------------------------------------------------------------------------------------------
# Bad inputs: exit status 2, one "error:" line naming the file and the reason, no traceback,
# and the existing output untouched. They fail before loading weights or compiling.

# name -> (arguments after "stylize", with {content}, {style}, ... standing for the files of
# the ``inputs`` fixture; the output file's name; strings the error line must contain).
BAD = {
    "missing_content": (["missing.png", "{style}"], "out.png", ["missing.png", "no such file"]),
    "text_style": (["{content}", "{text}"], "out.png", ["notes.jpg", "not an image"]),
    "truncated_content": (["{truncated}", "{style}"], "out.png", ["cut.png", "truncated"]),
    "one_pixel_content": (["{tiny}", "{style}"], "out.png", ["tiny.png", "1x1", "at least"]),
    "unknown_extension": (
        ["{content}", "{style}"],
        "out.xyz",
        ["out.xyz", "unknown output image type"],
    ),
    "bad_content_layer": (
        ["{content}", "{style}", "--content-layers", "relu9_9"],
        "out.png",
        ["relu9_9", "unknown"],
    ),
    "blend_count": (
        ["{content}", "{style}", "--style-blend-weights", "1,2"],
        "out.png",
        ["--style-blend-weights", "2 values for 1 style"],
    ),
    "missing_weights_file": (
        ["{content}", "{style}", "--weights", "nope.safetensors"],
        "out.png",
        ["nope.safetensors", "no such file"],
    ),
    "missing_init_image": (
        ["{content}", "{style}", "--init", "nope_init.png"],
        "out.png",
        ["nope_init.png", "no such file"],
    ),
    "style_folder_without_images": (
        ["{content}", "{empty_dir}"],
        "out.png",
        ["no_images", "no images"],
    ),
    "batch_output_not_a_folder": (
        ["{content}", "{style}", "--batch", "{content2}"],
        "out.png",
        ["out.png", "must be a folder"],
    ),
    "size_too_small": (["{content}", "{style}", "--size", "16"], "out.png", ["at least 32"]),
}


BAD.update(
    {
        # Numbers that compare false with everything pass a "< 0" check: each is refused.
        "nan_style_weight": (
            ["{content}", "{style}", "--style-weight", "nan"],
            "out.png",
            ["--style-weight", "nan", "not a finite number"],
        ),
        "inf_style_weight": (
            ["{content}", "{style}", "--style-weight", "inf"],
            "out.png",
            ["--style-weight", "inf", "not a finite number"],
        ),
        "negative_layer_weight": (
            ["{content}", "{style}", "--style-layer-weights", "1,-1,1,1,1"],
            "out.png",
            ["--style-layer-weights", "non-negative"],
        ),
        "nan_blend_weight": (
            ["{content}", "{style}", "--style-blend-weights", "nan"],
            "out.png",
            ["--style-blend-weights", "not a finite number"],
        ),
        # An 8x200 content becomes 64x3 at --size 64: every pooled map empty, the loss NaN.
        "elongated_content": (
            ["{strip}", "{style}"],
            "out.png",
            ["strip.png", "64x3", "at least 16 px"],
        ),
        "output_inside_a_file": (
            ["{content}", "{style}", "-o", "{style}/out.png"],
            "out.png",
            ["strokes.png/out.png", "is a file"],
        ),
        "log_inside_a_file": (
            ["{content}", "{style}", "--log", "{style}/log.json"],
            "out.png",
            ["strokes.png/log.json", "is a file"],
        ),
        "size_beyond_memory": (
            ["{content}", "{style}", "--size", "200000"],
            "out.png",
            ["--size 200000", "GiB", "smaller --size"],
        ),
    }
)


@pytest.fixture
def offline(home, monkeypatch):
    """In-process runs see the private ``$JAXSTYLE_HOME`` and cannot download."""
    for var, value in offline_env(home).items():
        monkeypatch.setenv(var, value)


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """``jaxstyle ARGV`` in this process: (exit status, stdout, stderr)."""
    from jaxstyle import cli

    try:
        rc = cli.main(list(argv))
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error(rc: int, stdout: str, stderr: str, *must_contain: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert rc == 2, (rc, stderr)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert stderr.rstrip().splitlines()[-1] == errors[0]  # the error is the last word
    for text in must_contain:
        assert text in errors[0], (text, errors[0])
    assert stdout == ""


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(inputs, offline, tmp_path, monkeypatch, capsys, case):
    # In-process: every case fails before weights are loaded or anything is compiled.
    args, out_name, must_contain = BAD[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / out_name).write_bytes(OLD_BYTES)
    before = {p: p.read_bytes() for p in inputs.values() if p.is_file()}
    fmt = {k: str(v) for k, v in inputs.items()}
    # The case's own flags come last, so they override these defaults.
    argv = ["stylize", "--size", "64", "--iterations", "5", "-q", "-o", out_name]
    rc, stdout, stderr = run_main(capsys, *argv, *[a.format(**fmt) for a in args])
    assert_one_error(rc, stdout, stderr, *must_contain)
    # Nothing written: the old output and every input are byte-identical, no temp file left.
    assert (tmp_path / out_name).read_bytes() == OLD_BYTES
    assert sorted(p.name for p in tmp_path.iterdir()) == [out_name]
    assert {p: p.read_bytes() for p in before} == before


@pytest.mark.parametrize("link", [False, True])
def test_stylize_refuses_to_overwrite_its_content(inputs, offline, tmp_path, capsys, link):
    content = tmp_path / "photo.png"
    content.write_bytes(inputs["content"].read_bytes())
    out = content
    if link:  # a symlink elsewhere that resolves to the input is the input
        out = tmp_path / "elsewhere" / "out.png"
        out.parent.mkdir()
        out.symlink_to(content)
    rc, stdout, stderr = run_main(
        capsys, "stylize", str(content), str(inputs["style"]), "-o", str(out), "-q"
    )
    assert_one_error(rc, stdout, stderr, str(out), "is the input", "refusing to overwrite")
    assert content.read_bytes() == inputs["content"].read_bytes()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A real (random) tiny transformation network written as a model file."""
    import jax

    from jaxstyle import models
    from jaxstyle.nets.transformer_net import TINY as cfg
    from jaxstyle.nets.transformer_net import TransformerNet

    params = TransformerNet(cfg).init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3)))["params"]
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    models.save_model(path, params, cfg, {"style": "test"})
    return path


def test_apply_refuses_to_overwrite_originals(inputs, tiny_model, offline, tmp_path, capsys):
    # apply FOLDER -o FOLDER would write FOLDER/land.png over the input land.png.
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "land.png").write_bytes(inputs["content"].read_bytes())
    (folder / "other.jpg").write_bytes(inputs["style"].read_bytes())
    rc, stdout, stderr = run_main(
        capsys, "apply", str(tiny_model), str(folder), "-o", str(folder), "-q"
    )
    assert_one_error(rc, stdout, stderr, "land.png", "is the input")
    assert (folder / "land.png").read_bytes() == inputs["content"].read_bytes()
    assert sorted(p.name for p in folder.iterdir()) == ["land.png", "other.jpg"]


@pytest.mark.parametrize(
    "command",
    [
        ["apply", "{model}", "{content}", "-o", "{style}/out.png"],
        ["export", "{workdir}", "-o", "{style}/model.safetensors"],
    ],
)
def test_unwritable_output_found_before_work(
    inputs, tiny_model, offline, tmp_path, capsys, command
):
    fmt = {k: str(v) for k, v in inputs.items()}
    fmt.update(model=str(tiny_model), workdir=str(tmp_path / "no-such-workdir"))
    rc, stdout, stderr = run_main(capsys, *[a.format(**fmt) for a in command])
    # Named before the model or workdir is even read (the workdir does not exist).
    assert_one_error(rc, stdout, stderr, "strokes.png/", "is a file")


def test_apply_checks_its_numbers(inputs, tiny_model, offline, tmp_path, capsys):
    for flag, value in (("--batch-size", "0"), ("--size", "-5"), ("--bucket", "0")):
        argv = ["apply", str(tiny_model), str(inputs["content"]), "-o", str(tmp_path / "o.png")]
        rc, stdout, stderr = run_main(capsys, *argv, flag, value)
        assert_one_error(rc, stdout, stderr, flag)
    assert list(tmp_path.iterdir()) == []


def test_apply_streams_a_folder(inputs, tiny_model, offline, tmp_path, capsys, monkeypatch):
    # A folder is decoded one batch at a time: never more than --batch-size images are held.
    from jaxstyle import images as imlib

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(5):
        (folder / f"p{i}.png").write_bytes(inputs["content"].read_bytes())
    live, peak = [0], [0]
    real_load = imlib.load_image

    def counting_load(path, long_side=None):
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        return real_load(path, long_side)

    real_save = imlib.save_image

    def counting_save(path, image):
        live[0] -= 1
        return real_save(path, image)

    monkeypatch.setattr(imlib, "load_image", counting_load)
    monkeypatch.setattr(imlib, "save_image", counting_save)
    out = tmp_path / "out"
    rc, _, stderr = run_main(
        capsys, "apply", str(tiny_model), str(folder), "-o", str(out), "--batch-size", "2", "-q"
    )
    assert rc == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [f"p{i}.png" for i in range(5)]
    assert peak[0] == 2, peak


def test_usage_errors_from_argparse(inputs, home, tmp_path):
    # argparse's own errors (unknown choice, malformed list) also exit 2 without a traceback.
    for bad in (["--optimizer", "sgd"], ["--style-blend-weights", "1,x"]):
        args = [str(inputs["content"]), str(inputs["style"]), "-o", "out.png", *bad]
        r = run_cli(home, tmp_path, "stylize", *args, timeout=60)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr
        assert bad[0] in r.stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Help needs no weights.


@pytest.mark.parametrize(
    "command, flags",
    [
        ("stylize", ["--size", "--iterations", "--style-weight", "--preserve-colors", "--batch"]),
        ("demo", ["--output", "--size", "--iterations", "--weights"]),
        ("weights", ["fetch", "list", "verify"]),
    ],
)
def test_help(home, tmp_path, command, flags):
    r = run_cli(home, tmp_path, command, "--help", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: jaxstyle {command}")
    for flag in flags:
        assert flag in r.stdout, flag
    assert list(tmp_path.iterdir()) == []


def test_console_script(home, tmp_path):
    exe = shutil.which("jaxstyle")
    if exe is None:
        pytest.skip("the jaxstyle console script is not on PATH (pip install -e .)")
    r = subprocess.run(
        [exe, "demo", "--help"], cwd=tmp_path, env=offline_env(home), capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert "--iterations" in r.stdout


# ---------------------------------------------------------------------------------------------
# Real runs.

SUMMARY_KEYS = {
    "content",
    "style",
    "tv",
    "total",
    "iterations",
    "function_evaluations",
    "optimisation_seconds",
    "compile_seconds",
    "network",
}


@pytest.mark.real_weights
def test_stylize_writes_image_log_and_intermediates(real_weights, inputs, home, tmp_path):
    r = run_cli(
        home,
        tmp_path,
        "stylize",
        str(inputs["content"]),
        str(inputs["style"]),
        "-o",
        "out.png",
        "--size",
        "64",
        "--iterations",
        "5",
        "--log",
        "log.json",
        "--save-every",
        "2",
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "wrote out.png" in r.stderr
    assert png_size(tmp_path / "out.png") == (64, 48)  # long side 64, 4:3 kept
    for it in (2, 4):  # every 2 of 5 iterations
        assert png_size(tmp_path / f"out_{it:05d}.png") == (64, 48)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "log.json",
        "out.png",
        "out_00002.png",
        "out_00004.png",
    ]

    log = json.loads((tmp_path / "log.json").read_text())
    summary = log["summary"]
    assert set(summary) >= SUMMARY_KEYS, SUMMARY_KEYS - set(summary)
    for k in ("content", "style", "tv", "total", "optimisation_seconds", "compile_seconds"):
        assert isinstance(summary[k], float) and np.isfinite(summary[k]), k
    assert summary["iterations"] == 5
    assert summary["function_evaluations"] >= 5
    assert summary["network"]["arch"] == "vgg16"
    assert len(log["iterations"]) == 5
    assert log["inputs"] == {"content": [str(inputs["content"])], "style": [str(inputs["style"])]}
    assert log["outputs"] == ["out.png"]
    assert log["config"]["size"] == 64 and log["config"]["save_every"] == 2
    # The image written is the best iterate (L-BFGS may rise in its first few iterations).
    assert summary["total"] <= 1.05 * min(r["total"] for r in log["iterations"])


@pytest.mark.real_weights
def test_stylize_batch_writes_into_a_folder(real_weights, inputs, home, tmp_path):
    r = run_cli(
        home,
        tmp_path,
        "stylize",
        str(inputs["content"]),
        str(inputs["style"]),
        "--batch",
        str(inputs["content2"]),
        "-o",
        "outs",
        "--size",
        "64",
        "--iterations",
        "3",
        "--log",
        "log.json",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    outs = tmp_path / "outs"
    assert sorted(p.name for p in outs.iterdir()) == ["land.png", "land_flipped.png"]
    for p in outs.iterdir():
        assert png_size(p) == (64, 48)
    log = json.loads((tmp_path / "log.json").read_text())
    assert [p["iterations"] for p in log["summary"]["per_image"]] == [3, 3]
    assert log["outputs"] == ["outs/land.png", "outs/land_flipped.png"]  # as the user gave -o


@pytest.mark.real_weights
def test_weights_list_and_verify(real_weights, home, tmp_path):
    r = run_cli(home, tmp_path, "weights", "list", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("vgg16 ")
    assert str(home / "weights" / "vgg16.safetensors") in r.stdout
    r = run_cli(home, tmp_path, "weights", "verify", "vgg16", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("vgg16: ok, 13 convolutions")


def test_weights_list_and_verify_without_weights(tmp_path):
    home = tmp_path / "empty-home"
    r = run_cli(home, tmp_path, "weights", "list", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("no weights cached")
    r = run_cli(home, tmp_path, "weights", "verify", "vgg16", timeout=60)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error:") and "vgg16" in r.stderr


@pytest.mark.real_weights
def test_demo_small(real_weights, home, tmp_path):
    # The demo's defaults take ~2 minutes; this checks its plumbing at 64 px (~20 s).
    r = run_cli(home, tmp_path, "demo", "-o", "x.png", "--size", "64", "--iterations", "3")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert max(png_size(tmp_path / "x.png")) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


def test_weights_verify_without_names(offline, home, capsys):
    # A bare `weights verify` checks every cached file (argparse used to refuse it as
    # "invalid choice: []"); an unknown name is one error line.
    rc, stdout, stderr = run_main(capsys, "weights", "verify")
    assert rc == 0, stderr
    cached = sorted(p.stem for p in (home / "weights").glob("*.safetensors"))
    assert [line.split(":")[0] for line in stdout.splitlines()] == cached or (
        not cached and stdout.startswith("no weights cached")
    )
    rc, stdout, stderr = run_main(capsys, "weights", "verify", "vgg13")
    assert_one_error(rc, stdout, stderr, "vgg13")


def test_stylize_that_ends_badly_exits_1(inputs, offline, tmp_path, capsys, monkeypatch):
    # A loss that is never finite (injected through gatys.stylize's objective argument) uses
    # up the restarts: the best (finite) iterate and the log are written, each failure is an
    # error: line on stderr, and the exit status is 1, not 0.
    import jax.numpy as jnp
    from PIL import Image

    from jaxstyle import gatys
    from jaxstyle import weights as jw
    from jaxstyle.nets import vgg

    weights = tmp_path / "random-vgg16.safetensors"
    jw.save(weights, vgg.init_params("vgg16"), {"arch": "vgg16", "convention": "caffe"})

    def never_finite(x, *args):
        total = jnp.sum(x) * jnp.nan
        return total, {"total": total, "content": total, "style": total, "tv": total}

    real = gatys.stylize
    monkeypatch.setattr(gatys, "stylize", lambda *a, **k: real(*a, objective=never_finite, **k))
    out, log = tmp_path / "out.png", tmp_path / "log.json"
    # The content with transparency (a left-to-right ramp): the best iterate keeps it.
    rgba = np.asarray(Image.open(inputs["content"]).convert("RGBA")).copy()
    rgba[..., 3] = np.linspace(0, 255, rgba.shape[1]).astype(np.uint8)
    content = tmp_path / "land_rgba.png"
    Image.fromarray(rgba, "RGBA").save(content)
    argv = [str(content), str(inputs["style"]), "-o", str(out), "--log", str(log)]
    rc, stdout, stderr = run_main(
        capsys, "stylize", *argv, "--weights", str(weights), "--size", "32", "-q"
    )
    assert rc == 1, stderr
    assert "Traceback" not in stderr and stdout == ""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "not finite" in errors[1], stderr
    assert png_size(out) == (32, 24)
    alpha = np.asarray(Image.open(out))[..., 3] / 255.0
    np.testing.assert_allclose(alpha, imlib.load_alpha(content, 32), atol=1 / 255 + 1e-6)
    assert json.loads(log.read_text())["summary"]["failed"] == [e[len("error: ") :] for e in errors]
