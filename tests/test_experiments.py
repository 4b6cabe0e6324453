"""The scripts of ``experiments/`` and their library, ``experiments.lib``.

Each analysis script runs as a user runs it, ``python -m experiments.NAME --smoke`` in a
subprocess, on small images that ship with scikit-image (written into temp content/style folders
passed with ``--content-dir``/``--style-dir``), so none of this needs ``../shared/images``. The
tests check that a run wrote its files, that every row of its summary's tables is one record of
its CSV/JSON, column by column, that the numbers are finite, and a few numbers recomputed from
the raw records it saved. The runs need the real VGG16 weights (``real_weights``: skipped with a
reason without them); ``bench_vs_torch`` needs torch too.

The runs start together from one fixture, three at a time (compilation is single-threaded, so
two cores are better used by several processes), and take about 3 minutes on two CPU cores in
all. Every run gets its own ``$JAXSTYLE_HOME`` linking the cached weights, and an unreachable
HTTP proxy, so nothing is downloaded and the real compilation cache is left alone. Error paths,
flags and the library run in-process.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import importlib
import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import offline_env
from PIL import Image

from experiments.lib import analysis, cli, figures, inputs, outputs, paths
from jaxstyle import weights as jw
from jaxstyle.configs import GatysConfig

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 600
PARALLEL = 3

#: Images of scikit-image's ``data`` module, used as content and style images.
CONTENT = ("astronaut", "chelsea", "coffee")
STYLE = "immunohistochemistry"

#: script -> files its smoke run must write.
EXPECTED = {
    "style_weight_sweep": ["sheet.png", "results.csv", "results.json", "loss_curves.png"],
    "layer_choice": ["sheet.png", "results.csv", "results.json", "loss_curves.png"],
    "pooling_convergence": ["sheet.png", "runs.csv", "results.json", "loss_curves.png"],
    "figure11_noise": ["sheet.png", "results.csv", "results.json", "loss_curves.png"],
    "johnson_checkpoints": [
        "sheet.png",
        "checkpoints.csv",
        "training.csv",
        "results.json",
        "loss_curves.png",
    ],
    "compare_methods": [
        "sheet.png",
        "results.csv",
        "results.json",
        "loss_curves.png",
        "ab/index.html",
        "ab_key.json",
    ],
    "bench_vs_torch": [
        "sheet.png",
        "results.csv",
        "time_to_first_result.csv",
        "results.json",
        "loss_curves.png",
    ],
    "restarts": ["sheet.png", "results.csv", "results.json", "loss_curves.png"],
    "any_style": ["sheet.png", "results.json", "outputs/mix_4-1.00.png"],
    "schedule_search": ["sheet.png", "results.csv", "trace.csv", "results.json", "loss_curves.png"],
}
#: script -> the images of its smoke run (the scripts' defaults name ../shared/images files).
IMAGE_ARGS = {
    "style_weight_sweep": ["--content", CONTENT[0], "--style", STYLE],
    "layer_choice": ["--content", CONTENT[0], "--style", STYLE],
    "pooling_convergence": ["--content", CONTENT[0], "--style", STYLE],
    "figure11_noise": ["--content", CONTENT[0], "--style", STYLE],
    "johnson_checkpoints": ["--style", STYLE],  # trains on the content folder
    "compare_methods": ["--content", CONTENT[0], CONTENT[1], "--style", STYLE],
    "bench_vs_torch": ["--content", CONTENT[0], "--style", STYLE],
    "restarts": [],  # every pair of the folders (--smoke: the first) and the demo pair
    "any_style": [],  # --smoke: random networks on the demo images
    "schedule_search": ["--pairs", f"{CONTENT[0]}:{STYLE}"],
}
NEEDS_TORCH = {"bench_vs_torch"}
#: Every script of experiments/ (python -m experiments.NAME).
SCRIPTS = sorted(p.stem for p in (REPO / "experiments").glob("*.py") if not p.name.startswith("__"))


def has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def script(name: str):
    return importlib.import_module(f"experiments.{name}")


@pytest.fixture(scope="module")
def image_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """``(content dir, style dir)`` of scikit-image's photos, 128x85 px.

    Cropped to 3:2 landscape: no more pixels at a given long side than the report's photos.
    """
    data = pytest.importorskip("skimage.data", reason="scikit-image (the test extra) absent")
    root = tmp_path_factory.mktemp("images")
    for kind, names in (("content", CONTENT), ("style", (STYLE,))):
        (root / kind).mkdir()
        for name in names:
            pixels = getattr(data, name)()
            h, w = pixels.shape[:2]
            h2 = min(h, w * 2 // 3)
            top, w2 = (h - h2) // 2, min(w, h2 * 3 // 2)
            left = (w - w2) // 2
            img = Image.fromarray(pixels[top : top + h2, left : left + w2])
            img.thumbnail((128, 128))
            img.save(root / kind / f"{name}.png")
    return root / "content", root / "style"


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A private ``$JAXSTYLE_HOME`` linking the real cached weights (skip without them)."""
    real = jw.cache_path("vgg16")  # respects the outer $JAXSTYLE_HOME
    if not real.is_file():
        pytest.skip(f"real weights absent: {real} (fetched by .ci/run)")
    home = tmp_path_factory.mktemp("jaxstyle-home")
    (home / "weights").mkdir()
    (home / "weights" / real.name).symlink_to(real)
    return home


def env_for(home: Path, name: str) -> dict[str, str]:
    env = offline_env(home)  # also puts the repository on PYTHONPATH: experiments imports
    if name in NEEDS_TORCH:
        # Several runs share two cores here: PyTorch's OpenMP threads spin-wait on busy cores
        # and slow down many times over. One thread each; speed is not what is tested.
        env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def smoke_runs(request, home, image_dirs, tmp_path_factory):
    """Starts the smoke run of every script whose test is selected; returns name -> future."""
    selected = {
        item.callspec.params["name"]
        for item in request.session.items
        if item.module is request.module
        and hasattr(item, "callspec")
        and item.originalname == "test_smoke_run_writes_its_files_and_numbers"
    }
    if not has_torch():
        selected -= NEEDS_TORCH
    root = tmp_path_factory.mktemp("experiments")
    content_dir, style_dir = image_dirs

    def run(name: str):
        out = root / name
        proc = subprocess.run(
            [sys.executable, "-m", f"experiments.{name}", "--smoke", "--out", str(out)]
            + ["--content-dir", str(content_dir), "--style-dir", str(style_dir)]
            + IMAGE_ARGS[name],
            cwd=root,
            env=env_for(home, name),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        return proc, out

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=PARALLEL)
    # Slowest first, so the pool's tail is short.
    order = sorted(selected, key=lambda n: list(EXPECTED).index(n), reverse=True)
    futures = {name: pool.submit(run, name) for name in order}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def result(smoke_runs, name: str) -> Path:
    proc, out = smoke_runs[name].result()
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return out


# ---------------------------------------------------------------------------------------------
# Reading what a run wrote.


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def from_csv(cell: str):
    """A CSV cell as the value the script wrote (ints, floats, None for an empty cell)."""
    if cell == "":
        return None
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return cell


def json_records(obj) -> list[dict]:
    """Every JSON object (dict) inside ``obj``, at any depth."""
    if isinstance(obj, dict):
        return [obj] + [r for v in obj.values() for r in json_records(v)]
    if isinstance(obj, list):
        return [r for v in obj for r in json_records(v)]
    return []


def md_tables(md: str) -> list[list[dict[str, str]]]:
    """The markdown tables of ``md``, each a list of rows ``{column: cell text}``."""
    tables, lines = [], md.splitlines()
    for i in range(len(lines) - 1):
        if lines[i].startswith("|") and re.fullmatch(r"\|(---\|)+", lines[i + 1].strip()):
            head = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            rows = []
            for line in lines[i + 2 :]:
                if not line.startswith("|"):
                    break
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                rows.append(dict(zip(head, cells, strict=True)))
            tables.append(rows)
    return tables


def check_numbers(out: Path) -> None:
    """Every row of the summary's tables is one record of the data; the data are finite.

    A row matches a record when each of its cells is the record's value in that column as
    :func:`outputs.fmt` shows it: the number in its place, not any equal number anywhere.
    """
    records: list[dict] = []
    for path in out.rglob("*.csv"):
        for row in read_csv(path):
            values = {k: from_csv(cell) for k, cell in row.items()}
            for k, v in values.items():
                if isinstance(v, float):
                    assert math.isfinite(v), f"{path.name}: {k} = {v}"
            records.append(values)
    for path in out.rglob("*.json"):
        records += json_records(json.loads(path.read_text()))  # strict JSON: no NaN/Infinity
    tables = md_tables((out / "summary.md").read_text())
    assert tables and all(tables), "no rows in the summary's tables"
    for table in tables:
        for row in table:
            found = any(all(shows(r, col, cell) for col, cell in row.items()) for r in records)
            assert found, f"summary row {row} is no record of the CSV/JSON"


def shows(record: dict, column: str, cell: str) -> bool:
    """Whether a summary cell shows ``record[column]`` (``md_table`` leaves absent keys blank)."""
    if column not in record:
        return cell == ""
    if record[column] is None:  # JSON null, or an empty CSV cell: None or absent
        return cell in ("-", "")
    return outputs.fmt(record[column]) == cell


def check_files(out: Path, name: str) -> None:
    for rel in [*EXPECTED[name], "summary.md"]:
        p = out / rel
        assert p.is_file() and p.stat().st_size > 0, f"{name}: {rel} missing"
        if p.suffix == ".png":
            with Image.open(p) as im:
                assert im.format == "PNG" and im.width > 32 and im.height > 32
    assert not list(out.rglob("*.part")), "temporary files left behind"
    md = (out / "summary.md").read_text()
    assert md.startswith("# ") and f"Command: `python -m experiments.{name} --smoke" in md


# ---------------------------------------------------------------------------------------------
# The runs.


@pytest.mark.real_weights
@pytest.mark.parametrize("name", list(EXPECTED))
def test_smoke_run_writes_its_files_and_numbers(smoke_runs, name):
    if name in NEEDS_TORCH:
        pytest.importorskip("torch")
    out = result(smoke_runs, name)
    check_files(out, name)
    check_numbers(out)
    CHECKS[name](out)


def _style_weight_sweep(out: Path) -> None:
    rows = read_csv(out / "results.csv")
    data = json.loads((out / "results.json").read_text())
    k = data["mapping"]["k"]
    assert [float(r["report_style_weight"]) for r in rows] == [1000, 2000, 5000, 10000]
    for r, j in zip(rows, data["results"], strict=True):
        # Our weight is k times the report's, to 3 significant digits.
        assert float(r["style_weight"]) == pytest.approx(k * float(r["report_style_weight"]), 2e-3)
        # The CSV holds exactly the numbers of the JSON, and the final losses are the last
        # records' terms of a run that ends at the image it saved.
        assert float(r["total_loss"]) == j["total_loss"]
        curve = data["curves"][f"{r['pair']}@{float(r['report_style_weight']):g}"]
        assert len(curve["total"]) == int(r["iterations"]) == 2
    assert {r["pair"] for r in rows} == {f"{CONTENT[0]}+{STYLE}"}
    # The change of the output from one weight to the next, from the saved images.
    imgs = [
        np.asarray(
            Image.open(out / "outputs" / f"{r['pair']}_sw{float(r['report_style_weight']):g}.png"),
            np.float32,
        )
        / 255
        for r in rows
    ]
    assert rows[0]["change_from_previous"] == ""
    for r, a, b in zip(rows[1:], imgs, imgs[1:], strict=False):
        assert float(r["change_from_previous"]) == pytest.approx(np.mean(np.abs(b - a)), abs=2e-3)


def _layer_choice(out: Path) -> None:
    rows = read_csv(out / "results.csv")
    assert [r["setting"] for r in rows] == ["fig9a", "fig9b"]
    data = json.loads((out / "results.json").read_text())
    tv_content = data["settings"]["tv_content"]
    for r in rows:
        assert float(r["tv_ratio"]) == pytest.approx(float(r["tv_output"]) / tv_content, 1e-6)
        assert float(r["style_weight"]) == pytest.approx(5000 * float(r["k"]), 2e-3)


def _pooling_convergence(out: Path) -> None:
    rows = read_csv(out / "runs.csv")
    data = json.loads((out / "results.json").read_text())
    assert sorted((r["pooling"], r["seed"]) for r in rows) == [
        ("avg", "0"),
        ("avg", "1"),
        ("max", "0"),
        ("max", "1"),
    ]
    tol = data["settings"]["tol"]
    for r in rows:
        curve = data["curves"][f"{r['pooling']}/{r['seed']}"]
        assert len(curve) == 4
        assert int(r["converged_at"]) == analysis.stop_improving(curve, tol)
        assert float(r["best_loss"]) == pytest.approx(min(curve), 1e-6)


def _johnson_checkpoints(out: Path) -> None:
    rows = read_csv(out / "checkpoints.csv")
    assert len(rows) == 2 * 2 * 2  # weights x checkpoints x test images
    assert {r["step"] for r in rows} == {"2", "4"}
    assert {r["image"] for r in rows} == set(CONTENT[:2])  # the first --test images of --data
    for r in rows:
        # Nothing to compare with at the first checkpoint; a change in [0, 1] after it.
        if r["step"] == "2":
            assert r["mean_abs_change"] == ""
        else:
            assert 0 <= float(r["mean_abs_change"]) <= 1
    training = read_csv(out / "training.csv")
    for w in ("2000.0", "1000.0"):
        assert [int(t["step"]) for t in training if t["report_style_weight"] == w] == [1, 2, 3, 4]
    for name in (f"sw2000_{CONTENT[0]}_step2.png", f"sw1000_{CONTENT[1]}_step4.png"):
        assert (out / "outputs" / name).is_file()


def _compare_methods(out: Path) -> None:
    rows = read_csv(out / "results.csv")
    assert [r["image"] for r in rows] == list(CONTENT[:2])
    for r in rows:
        speedup = float(r["gatys_seconds"]) / float(r["johnson_seconds"])
        assert float(r["speedup"]) == pytest.approx(speedup, 1e-6)
    # The A/B page is blind: random names, no method named, every image in the key.
    page = (out / "ab" / "index.html").read_text()
    key = json.loads((out / "ab_key.json").read_text())
    shown = set(re.findall(r'src="img/(\w+)\.png"', page))
    assert shown == set(key["images"]) == {p.stem for p in (out / "ab" / "img").iterdir()}
    assert "gatys" not in page.lower() and "johnson" not in page.lower()
    assert {v["method"] for v in key["images"].values()} == {"gatys", "johnson"}
    # Tally (in-process): one voter prefers Gatys on pair 0 and Johnson on pair 1; a vote file
    # of another page is skipped.
    votes = []
    for pair, method in ((0, "gatys"), (1, "johnson")):
        img = next(
            t for t, v in key["images"].items() if v["pair"] == pair and v["method"] == method
        )
        votes.append({"pair": pair, "chosen": img})
    (out / "v1.json").write_text(json.dumps({"page": key["page"], "votes": votes}))
    (out / "v2.json").write_text(json.dumps({"page": "another", "votes": votes}))
    script("compare_methods").main(
        ["--out", str(out), "--tally", str(out / "v1.json"), str(out / "v2.json")]
    )
    tally = json.loads((out / "tally.json").read_text())
    assert tally["voters"] == 1 and tally["votes"] == 2
    assert tally["by_method"] == {"gatys": 1, "johnson": 1}
    assert tally["binomial_p_two_sided"] == pytest.approx(1.0)
    assert sum(tally["by_side"].values()) == 2 and len(tally["skipped"]) == 1


def _bench_vs_torch(out: Path) -> None:
    rows = read_csv(out / "results.csv")
    assert [(r["workload"], r["batch"]) for r in rows] == [
        ("gatys_evaluation", "1"),
        ("gatys_lbfgs_iteration", "1"),
        ("johnson_train_step", "2"),
        ("johnson_inference", "1"),
        ("johnson_inference", "2"),
        ("multistyle_train_step", "2"),
        ("adain_inference", "1"),
        ("adain_inference", "2"),
    ]
    data = json.loads((out / "results.json").read_text())
    mm = data["matmul"]
    for r in rows:
        j, t, f = float(r["jax_seconds"]), float(r["torch_seconds"]), float(r["flops"])
        assert float(r["ratio_jax_torch"]) == pytest.approx(j / t, 1e-6)
        assert float(r["jax_gflops"]) == pytest.approx(f / j / 1e9, 1e-6)
        assert float(r["jax_vs_matmul"]) == pytest.approx(f / j / 1e9 / mm["jax_gflops"], 1e-6)
        if r["workload"] == "adain_inference":  # no analytic count: XLA's
            assert r["flops_source"] == "xla" and f == float(r["xla_flops"]) > 0
            assert r["size"] == "32"
            continue
        assert f == float(r["analytic_flops"]) and r["flops_source"] == "analytic"
        # XLA counts the arithmetic it runs: the direct algorithm's for VGG, to within a third;
        # for the Johnson network on CPU, Winograd's fewer and space-to-depth's more.
        ratio = float(r["xla_flops"]) / f
        if r["workload"].startswith("gatys"):
            assert 0.75 < ratio < 1.33, r
        else:
            assert 0.3 < ratio < 1.5, r
    ttfr = read_csv(out / "time_to_first_result.csv")
    assert [r["run"] for r in ttfr] == ["cold cache", "warm cache", "cache disabled"]
    assert int(ttfr[0]["cache_files"]) > 0 and int(ttfr[2]["cache_files"]) == 0


def _restarts(out: Path) -> None:
    rows = read_csv(out / "results.csv")
    data = json.loads((out / "results.json").read_text())
    assert [r["pair"] for r in rows] == ["demo x demo", f"{CONTENT[0]} x {STYLE}"]
    assert data["config"]["iterations"] == 3 and data["config"]["size"] == 64
    for r, j in zip(rows, data["results"], strict=True):
        assert int(r["restarts"]) == j["restarts"] == len(r["restart_iterations"].split())
        assert int(r["function_evaluations"]) >= 3
        # The final loss is the best iterate's: at most the lowest loss of its curve (+ rounding).
        assert j["final_loss"] <= min(data["curves"][r["pair"]]) * 1.001
    verdict = f"{sum(int(r['restarts']) > 0 for r in rows)} of 2 runs needed a restart"
    assert verdict in (out / "summary.md").read_text()


def _any_style(out: Path) -> None:
    data = json.loads((out / "results.json").read_text())
    assert data["styles"] == ["a.png", "b.png"] and data["pair"] == [0, 1]
    assert {r["kind"] for r in data["networks"].values()} == {"multistyle", "adain"}
    # One output per style; 5 interpolation steps; AdaIN with the one demo style; 5 alphas.
    names = sorted(p.stem for p in (out / "outputs").glob("*.png"))
    assert names == sorted(
        ["multi_0-a", "multi_1-b", "adain_demo"]
        + [f"mix_{i}-{t:.2f}" for i, t in enumerate(np.linspace(0, 1, 5))]
        + [f"alpha_{a:.2f}" for a in (0, 0.25, 0.5, 0.75, 1)]
    ), names
    # Interpolation: the ends are the two styles' outputs.
    mix = [np.asarray(Image.open(out / "outputs" / f"mix_{i}-{t:.2f}.png"), np.float32)
           for i, t in ((0, 0.0), (4, 1.0))]  # fmt: skip
    one = [np.asarray(Image.open(out / "outputs" / f"multi_{k}-{n}.png"), np.float32)
           for k, n in ((0, "a"), (1, "b"))]  # fmt: skip
    np.testing.assert_array_equal(mix[0], one[0])
    np.testing.assert_array_equal(mix[1], one[1])


def _figure11_noise(out: Path) -> None:
    rows = read_csv(out / "results.csv")
    settings = {(r["input"], r["init"], r["iterations"]) for r in rows}
    assert settings == {(h, i, n) for h in ("ours", "report") for i in ("content", "noise")
                        for n in ("2", "4")}  # fmt: skip
    for r in rows:
        assert float(r["style_weight"]) > 0 and float(r["tv_ratio"]) > 0
        if r["input"] == "report":
            assert float(r["style_weight"]) == 5000.0  # the report's weight, unmapped
    # A few iterations from uniform noise leave far more speckle than from the photo.
    by = {(r["input"], r["init"], r["iterations"]): float(r["speckle_ratio"]) for r in rows}
    for h in ("ours", "report"):
        assert by[(h, "noise", "2")] > 2 * by[(h, "content", "2")]


def test_report_net_is_the_report_input_handling():
    """``figure11_noise.report_net`` (a 1x1 input map) equals ``report.report_input`` fed to
    the Caffe-convention network, layer by layer."""
    import jax

    from experiments.lib import report
    from jaxstyle.nets.vgg import CAFFE_MEAN_BGR, VGGNet, init_params

    net = VGGNet(params=init_params("vgg16", jax.random.PRNGKey(0)))
    x = jax.random.uniform(jax.random.PRNGKey(1), (1, 20, 24, 3))
    layers = ("conv1_1", "conv2_2")
    emulated = script("figure11_noise").report_net(net).features(x, layers)
    # The Caffe convention subtracts its mean from 255 * BGR; report_input has no mean, so add
    # it back before the caffe preprocessing to feed exactly report_input(x).
    raw = report.report_input(net, x) + np.asarray(CAFFE_MEAN_BGR, np.float32)
    direct = net.features(raw[..., ::-1] / 255.0, layers)
    for name in layers:
        np.testing.assert_allclose(emulated[name], direct[name], rtol=1e-4, atol=1e-4)


def _schedule_search(out: Path) -> None:
    rows = read_csv(out / "results.csv")
    trace = read_csv(out / "trace.csv")
    assert [(r["schedule"], r["kind"]) for r in rows] == [
        ("64:4", "default"),
        ("32:4,64:2", "candidate"),
    ]
    default, cand = rows
    assert float(default["loss_ratio"]) == 1.0 and float(default["time_ratio"]) == 1.0
    assert float(cand["loss_ratio"]) == pytest.approx(
        float(cand["final_loss"]) / float(default["final_loss"]), rel=1e-6
    )
    assert cand["meets_target"] == str(
        float(cand["loss_ratio"]) <= 1.0 and float(cand["time_ratio"]) <= 0.5
    )
    # Traced every 2 iterations at the last size only, counted over the whole schedule.
    by = {r["schedule"]: r for r in rows}
    for name, its in (("64:4", [2, 4]), ("32:4,64:2", [6])):
        points = [t for t in trace if t["schedule"] == name]
        assert [int(t["iteration"]) for t in points] == its
        seconds = [float(t["seconds"]) for t in points]
        assert seconds == sorted(seconds) and seconds[-1] <= float(by[name]["wall_seconds"])
        # The final loss is the best iterate's: at most the lowest traced loss (+ rounding).
        assert float(by[name]["final_loss"]) <= min(float(t["loss"]) for t in points) * 1.001
    assert "on every pair" in (out / "summary.md").read_text()


def test_schedule_search_checks_its_schedules_before_any_work(capsys, tmp_path):
    parse = script("schedule_search").parse_schedule
    assert parse("256:300, 512:200") == (((256, 300), (512, 200)), None)
    assert parse("512:250@100").history == 100 and parse("512:250@100").label == "512:250@100"
    for bad in ("512", "512:0", "16:10", "512:100,256:100", "256:x", "512:9@0", "512:9@x"):
        with pytest.raises(ValueError, match="schedule"):
            parse(bad)
    out = tmp_path / "out"
    for argv, says in (
        (["--schedules", "256:10,384:10"], "ends at 384 px, not --size 512"),
        (["--schedules", "512:10,256:10"], "sizes must grow"),
        (["--pairs", "tubingen"], "expected CONTENT:STYLE"),
    ):
        with pytest.raises(SystemExit) as e:
            script("schedule_search").main(["--out", str(out), *argv])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith("error: ") and says in err, err
    assert not out.exists()


CHECKS = {
    "any_style": _any_style,
    "schedule_search": _schedule_search,
    "figure11_noise": _figure11_noise,
    "restarts": _restarts,
    "style_weight_sweep": _style_weight_sweep,
    "layer_choice": _layer_choice,
    "pooling_convergence": _pooling_convergence,
    "johnson_checkpoints": _johnson_checkpoints,
    "compare_methods": _compare_methods,
    "bench_vs_torch": _bench_vs_torch,
}


@pytest.mark.real_weights
def test_readme_figures_copies_outputs_but_not_inputs(smoke_runs, tmp_path):
    done = {name: f.result() for name, f in smoke_runs.items()}
    done = {name: out for name, (proc, out) in done.items() if proc.returncode == 0}
    if not done:
        pytest.skip("no smoke run was selected")
    root = next(iter(done.values())).parent
    script("readme_figures").main(["--results", str(root), "--to", str(tmp_path / "docs")])
    for name, out in done.items():
        copied = tmp_path / "docs" / name
        assert (copied / "summary.md").read_text() == (out / "summary.md").read_text()
        assert not (copied / "sheet.png").exists()  # it shows the uncommitted input images
        if list((out / "outputs").glob("*.png")):
            with Image.open(copied / "outputs.png") as im:
                assert im.format == "PNG" and im.width <= 760 and im.mode == "P"


# ---------------------------------------------------------------------------------------------
# Flags and input folders, in-process.


def test_every_script_is_a_module_whose_docstring_starts_with_its_command():
    assert set(EXPECTED) <= set(SCRIPTS) and "readme_figures" in SCRIPTS
    for name in SCRIPTS:
        doc = script(name).__doc__
        first = doc.splitlines()[0]
        assert first.startswith(f"python -m experiments.{name} "), first
        if name in EXPECTED:
            assert first.startswith(f"python -m experiments.{name} [--out DIR] [--smoke]"), first
            assert "CPU cores" in first and "--smoke" in doc.split("\n\n")[1]


#: Scripts that run Gatys, and the GatysConfig flags each must offer.
GATYS_SCRIPTS = {
    "style_weight_sweep": ("--size", "--iterations", "--pooling", "--init", "--style-layers"),
    "layer_choice": ("--size", "--iterations", "--pooling", "--init"),
    "pooling_convergence": ("--size", "--iterations", "--init", "--content-layers"),
    "compare_methods": ("--size", "--iterations", "--style-weight"),
    "bench_gatys": ("--size", "--iterations"),
    "choose_style_weight": ("--size", "--iterations"),
}


@pytest.mark.parametrize("name", sorted(GATYS_SCRIPTS))
def test_gatys_flags_are_stylize_flags_with_the_scripts_defaults(name, capsys):
    with pytest.raises(SystemExit) as e:
        script(name).main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    helps = {
        "--" + f.name.replace("_", "-"): " ".join(f.metadata["help"].split())
        for f in dataclasses.fields(GatysConfig)
    }
    for flag in GATYS_SCRIPTS[name]:
        assert re.search(rf"{flag} [A-Z_{{]", text), f"{name} has no {flag}"
        assert helps[flag] in text, f"{name} {flag}: not GatysConfig's help"


def test_gatys_flags_build_the_config_with_per_script_defaults():
    ap = argparse.ArgumentParser()
    cli.gatys_flags(ap, ("size", "pooling", "content_layers"), size=64, pooling="avg")
    args = ap.parse_args(["--content-layers", "relu3_1,relu4_1"])
    cfg = cli.gatys_config(args, style_weight=3.0)
    assert cfg == GatysConfig(
        size=64, pooling="avg", content_layers=("relu3_1", "relu4_1"), style_weight=3.0
    )
    with pytest.raises(SystemExit):  # the choices are GatysConfig's
        ap.parse_args(["--pooling", "median"])
    with pytest.raises(TypeError, match="sizes"):
        cli.gatys_flags(argparse.ArgumentParser(), ("sizes",))
    with pytest.raises(TypeError, match="iterations"):  # a default for a flag not offered
        cli.gatys_flags(argparse.ArgumentParser(), ("size",), iterations=3)


#: Scripts whose images come from --content-dir/--style-dir.
IMAGE_SCRIPTS = ("style_weight_sweep", "layer_choice", "pooling_convergence", "figure11_noise")
IMAGE_SCRIPTS += ("johnson_checkpoints", "compare_methods", "bench_vs_torch", "bench_gatys")
IMAGE_SCRIPTS += ("choose_style_weight", "schedule_search")


@pytest.mark.parametrize("kind", ["content", "style"])
@pytest.mark.parametrize("name", IMAGE_SCRIPTS)
def test_without_image_folders_a_script_names_the_flag_before_any_work(
    name, kind, image_dirs, monkeypatch, capsys, tmp_path
):
    """A fresh clone has no ../shared/images: one ``error:`` line saying what to pass, exit 2."""
    monkeypatch.setattr(paths, "SHARED_IMAGES", tmp_path / "no-such-folder")
    content_dir, style_dir = image_dirs
    # The other kind is given (as a path), so the error is about this kind's folder.
    if kind == "style" and name == "johnson_checkpoints":
        other = ["--data", str(content_dir)]
    elif name == "schedule_search":  # a pair: one image by path, the other by name
        given = content_dir / f"{CONTENT[0]}.png" if kind == "style" else style_dir / f"{STYLE}.png"
        other = ["--pairs", f"{given}:{STYLE}" if kind == "style" else f"{CONTENT[0]}:{given}"]
    elif kind == "style":
        other = ["--content", str(content_dir / f"{CONTENT[0]}.png")]
    else:
        other = ["--style", str(style_dir / f"{STYLE}.png")]
    out = tmp_path / "out"
    argv = ["--out", str(out), *other]
    if name in EXPECTED:
        argv.append("--smoke")
    with pytest.raises(SystemExit) as e:
        script(name).main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert f"pass --{kind}-dir DIR" in err and str(tmp_path / "no-such-folder") in err
    assert not out.exists()  # nothing was written, nothing was loaded


def test_images_are_found_by_name_with_any_image_suffix(image_dirs, tmp_path, capsys):
    ap = argparse.ArgumentParser()
    cli.add_image_dir_flags(ap)
    (tmp_path / "photo.WEBP").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    args = ap.parse_args(["--content-dir", str(tmp_path), "--style-dir", str(image_dirs[1])])
    assert inputs.find_image(args, "content", "photo") == tmp_path / "photo.WEBP"
    assert inputs.find_image(args, "style", STYLE) == image_dirs[1] / f"{STYLE}.png"
    given = image_dirs[0] / f"{CONTENT[2]}.png"  # a path is taken as it is
    assert inputs.find_image(args, "style", str(given)) == given
    with pytest.raises(SystemExit) as e:
        inputs.find_image(args, "content", "notes")
    assert e.value.code == 2
    assert capsys.readouterr().err == (
        f"error: no content image 'notes' in {tmp_path} (pass --content NAME or a path)\n"
    )
    assert paths.list_images(tmp_path) == [tmp_path / "photo.WEBP"]


def test_shared_images_are_the_default_where_present(shared_images):
    args = argparse.Namespace(content_dir=None, style_dir=None)
    assert inputs.image_dir(args, "content") == shared_images / "content"
    assert inputs.find_image(args, "style", "starry_night").parent == shared_images / "style"


# ---------------------------------------------------------------------------------------------
# The library, without running a script.


def test_stop_improving_and_trend():
    assert analysis.stop_improving([10, 5, 2, 1.999, 1.998], 0.01) == 3
    assert analysis.stop_improving([10, 20, 30], 0.01) == 1  # never improved on the first
    assert analysis.stop_improving([10, float("nan"), 1], 0.01) == 3
    assert analysis.trend([1, 2, 3]) == "rises"
    assert analysis.trend([3, 2, 2]) == "falls"
    assert analysis.trend([1, 1.00001]) == "flat"
    assert analysis.trend([1, 3, 2]) == "mixed"


def test_binomial_p_matches_a_hand_count():
    cm = script("compare_methods")
    assert cm.binomial_p(1, 2) == pytest.approx(1.0)
    assert cm.binomial_p(0, 3) == pytest.approx(2 / 8)  # P(0) + P(3)
    assert cm.binomial_p(59, 80) < 1e-4  # the report's survey


def test_analytic_flops_of_vgg_match_a_hand_count():
    bench = script("bench_vs_torch")
    # conv1_1 and conv1_2 at 4x4: 2*16*9*(3*64 + 64*64).
    assert bench.vgg_forward_flops("vgg16", 4, 4, ["relu1_2"])["conv"] == 2 * 16 * 9 * (
        3 * 64 + 64 * 64
    )
    v = bench.vgg_forward_flops("vgg16", 8, 6, ["conv2_1"])
    assert v["shapes"]["conv2_1"] == (4, 3, 128)


def test_contact_sheet_and_outputs(tmp_path):
    rng = np.random.default_rng(0)
    rows = [[(rng.random((20, 30, 3)), "a\nb"), (rng.random((30, 20, 3)), "c")]]
    sheet = figures.contact_sheet(rows, "title", height=40)
    assert sheet.height > 40 and sheet.width >= 30 + 20
    out = outputs.Outputs(tmp_path, "x", argparse.Namespace(argv=["--smoke", "--size", "64"]))
    out.csv("t.csv", [{"a": 1.0, "b": float("nan")}, {"a": 2, "c": "z"}])
    assert read_csv(tmp_path / "t.csv") == [
        {"a": "1.0", "b": "", "c": ""},
        {"a": "2", "b": "", "c": "z"},
    ]
    out.json("t.json", {"x": float("inf"), "y": np.float32(1.5)})
    assert json.loads((tmp_path / "t.json").read_text()) == {"x": None, "y": 1.5}
    assert outputs.fmt(10000.0) == "10000" and outputs.fmt(0.0123456) == "0.01235"
    out.summary("T", [outputs.md_table([{"n": 2, "v": 0.5}], ["n", "v"])])
    md = (tmp_path / "summary.md").read_text()
    assert "Command: `python -m experiments.x --smoke --size 64`" in md
    assert md_tables(md) == [[{"n": "2", "v": "0.5"}]]


def test_johnson_checkpoints_resumes_where_it_stopped_on_the_photo_folder(
    home, image_dirs, monkeypatch, tmp_path
):
    """``--resume`` reads back finished checkpoints and trains only the steps after them;
    ``--data photos`` trains on scikit-image's photos and the content folder's."""
    monkeypatch.setenv("JAXSTYLE_HOME", str(home))
    content_dir, style_dir = image_dirs
    out = tmp_path / "out"
    argv = [
        "--smoke", "--data", "photos", "--content-dir", str(content_dir),
        "--style-dir", str(style_dir), "--style", STYLE, "--out", str(out),
    ]  # fmt: skip
    jc = script("johnson_checkpoints")
    jc.main([*argv, "--checkpoints", "2"])
    first = read_csv(out / "checkpoints.csv")
    photos = sorted(p.stem for p in (out / "photos").iterdir())
    assert photos == sorted({*jc.PHOTOS, *CONTENT})
    done = out / "work" / "sw2000" / "outputs_step2.npz"
    stamp = done.stat().st_mtime_ns

    jc.main([*argv, "--checkpoints", "2,4", "--resume"])
    assert done.stat().st_mtime_ns == stamp  # read back, not recomputed
    rows = read_csv(out / "checkpoints.csv")
    assert [r for r in rows if r["step"] == "2"] == first
    assert all(float(r["mean_abs_change"]) > 0 for r in rows if r["step"] == "4")
    training = read_csv(out / "training.csv")
    for w in ("2000.0", "1000.0"):
        # Steps 1-2 from the first sitting, 3-4 from the second: each exactly once.
        assert [int(t["step"]) for t in training if t["report_style_weight"] == w] == [1, 2, 3, 4]
    # Without --resume the work is started afresh.
    jc.main([*argv, "--checkpoints", "2"])
    assert done.stat().st_mtime_ns != stamp
    assert not (out / "work" / "sw2000" / "outputs_step4.npz").exists()
