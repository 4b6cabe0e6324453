"""Smoke runs of every script in ``experiments/``, as a user runs them: in a subprocess.

Each script runs with ``--smoke`` (tiny sizes, a couple of iterations) into a temp folder; the
tests check that it wrote its files, that every number in its summary's tables is one of the
numbers in its CSV/JSON, that those are finite, and a few numbers recomputed from the raw
records it saved. The scripts need the real VGG16 weights (``real_weights``: skipped with a
reason without them); ``bench_vs_torch`` needs torch too.

The runs start together from one fixture, three at a time (compilation is single-threaded, so
two cores are better used by several processes), and take about 3 minutes on two CPU cores in
all. Every run gets its own ``$JAXSTYLE_HOME`` linking the cached weights, and an unreachable
HTTP proxy, so nothing is downloaded and the real compilation cache is left alone.
"""

from __future__ import annotations

import concurrent.futures
import csv
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

from jaxstyle import weights as jw

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
TIMEOUT = 600
PARALLEL = 3

#: script -> files its smoke run must write.
EXPECTED = {
    "style_weight_sweep": ["sheet.png", "results.csv", "results.json", "loss_curves.png"],
    "layer_choice": ["sheet.png", "results.csv", "results.json", "loss_curves.png"],
    "pooling_convergence": ["sheet.png", "runs.csv", "results.json", "loss_curves.png"],
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
}
NEEDS_TORCH = {"bench_vs_torch"}


def has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def load_script(name: str):
    """Imports ``experiments/<name>.py`` as a module (for its helper functions)."""
    sys.path.insert(0, str(EXPERIMENTS))
    spec = importlib.util.spec_from_file_location(f"exp_{name}", EXPERIMENTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
    env = offline_env(home)
    if name in NEEDS_TORCH:
        # Several runs share two cores here: PyTorch's OpenMP threads spin-wait on busy cores
        # and slow down many times over. One thread each; speed is not what is tested.
        env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def smoke_runs(request, home, tmp_path_factory):
    """Starts the smoke run of every script whose test is selected; returns name -> future."""
    selected = {
        item.callspec.params["script"]
        for item in request.session.items
        if item.module is request.module
        and hasattr(item, "callspec")
        and "script" in item.callspec.params
    }
    if not has_torch():
        selected -= NEEDS_TORCH
    root = tmp_path_factory.mktemp("experiments")

    def run(name: str):
        out = root / name
        proc = subprocess.run(
            [sys.executable, str(EXPERIMENTS / f"{name}.py"), "--smoke", "--out", str(out)],
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


def number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def json_numbers(obj) -> list[float]:
    if isinstance(obj, bool) or obj is None:
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in json_numbers(x)]
    if isinstance(obj, list):
        return [v for x in obj for v in json_numbers(x)]
    return []


def md_table_numbers(md: str) -> list[float]:
    """Every number in the cells of the markdown tables of ``md``."""
    out = []
    for line in md.splitlines():
        if not line.startswith("|") or re.fullmatch(r"[|\-\s]+", line):
            continue
        for cell in line.strip().strip("|").split("|"):
            v = number(cell.strip())
            if v is not None:
                out.append(v)
    return out


def check_numbers(out: Path) -> None:
    """The summary's numbers are the data's; the data's numbers are finite."""
    data: list[float] = []
    for path in out.rglob("*.csv"):
        for row in read_csv(path):
            for k, cell in row.items():
                v = number(cell)
                if v is not None:
                    assert math.isfinite(v), f"{path.name}: {k} = {cell}"
                    data.append(v)
    for path in out.rglob("*.json"):
        data += json_numbers(json.loads(path.read_text()))  # strict JSON: no NaN/Infinity
    values = np.asarray(data, np.float64)
    md = (out / "summary.md").read_text()
    shown = md_table_numbers(md)
    assert shown, "no numbers in the summary's tables"
    for v in shown:
        # fmt() keeps 4 significant digits: a relative error of at most 5e-4.
        assert np.any(np.isclose(values, v, rtol=6e-4, atol=0)), f"{v} in summary.md not in data"


def check_files(out: Path, name: str) -> None:
    for rel in [*EXPECTED[name], "summary.md"]:
        p = out / rel
        assert p.is_file() and p.stat().st_size > 0, f"{name}: {rel} missing"
        if p.suffix == ".png":
            with Image.open(p) as im:
                assert im.format == "PNG" and im.width > 32 and im.height > 32
    assert not list(out.rglob("*.part")), "temporary files left behind"
    md = (out / "summary.md").read_text()
    assert md.startswith("# ") and f"experiments/{name}.py" in md


def test_docstrings_start_with_the_command_and_runtime():
    for name in EXPECTED:
        doc = load_script(name).__doc__
        first = doc.splitlines()[0]
        assert first.startswith(f"python experiments/{name}.py [--out DIR] [--smoke]"), first
        assert "CPU cores" in first and "--smoke" in doc.split("\n\n")[1]


# ---------------------------------------------------------------------------------------------
# The runs.


@pytest.mark.real_weights
@pytest.mark.parametrize("script", list(EXPECTED))
def test_smoke_run_writes_its_files_and_numbers(smoke_runs, script):
    if script in NEEDS_TORCH:
        pytest.importorskip("torch")
    out = result(smoke_runs, script)
    check_files(out, script)
    check_numbers(out)
    CHECKS[script](out)


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


def _layer_choice(out: Path) -> None:
    rows = read_csv(out / "results.csv")
    assert [r["setting"] for r in rows] == ["fig9a", "fig9b"]
    data = json.loads((out / "results.json").read_text())
    tv_content = data["settings"]["tv_content"]
    for r in rows:
        assert float(r["tv_ratio"]) == pytest.approx(float(r["tv_output"]) / tv_content, 1e-6)
        assert float(r["style_weight"]) == pytest.approx(5000 * float(r["k"]), 2e-3)


def _pooling_convergence(out: Path) -> None:
    common = load_script("common")
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
        assert int(r["converged_at"]) == common.stop_improving(curve, tol)
        assert float(r["best_loss"]) == pytest.approx(min(curve), 1e-6)


def _johnson_checkpoints(out: Path) -> None:
    rows = read_csv(out / "checkpoints.csv")
    assert len(rows) == 2 * 2 * 2  # weights x checkpoints x test images
    assert {r["step"] for r in rows} == {"2", "4"}
    for r in rows:
        # Nothing to compare with at the first checkpoint; a change in [0, 1] after it.
        if r["step"] == "2":
            assert r["mean_abs_change"] == ""
        else:
            assert 0 <= float(r["mean_abs_change"]) <= 1
    training = read_csv(out / "training.csv")
    for w in ("2000.0", "1000.0"):
        assert [int(t["step"]) for t in training if t["report_style_weight"] == w] == [1, 2, 3, 4]
    for name in ("sw2000_amber_step2.png", "sw1000_golden_gate_step4.png"):
        assert (out / "outputs" / name).is_file()


def _compare_methods(out: Path) -> None:
    rows = read_csv(out / "results.csv")
    assert [r["image"] for r in rows] == ["tubingen", "golden_gate"]
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
    # Tally: one voter prefers Gatys on pair 0 and Johnson on pair 1; another file is ignored.
    votes = []
    for pair, method in ((0, "gatys"), (1, "johnson")):
        img = next(
            t for t, v in key["images"].items() if v["pair"] == pair and v["method"] == method
        )
        votes.append({"pair": pair, "chosen": img})
    (out / "v1.json").write_text(json.dumps({"page": key["page"], "votes": votes}))
    (out / "v2.json").write_text(json.dumps({"page": "another", "votes": votes}))
    proc = subprocess.run(
        [sys.executable, str(EXPERIMENTS / "compare_methods.py"), "--out", str(out)]
        + ["--tally", str(out / "v1.json"), str(out / "v2.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
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
    ]
    data = json.loads((out / "results.json").read_text())
    mm = data["matmul"]
    for r in rows:
        j, t, f = float(r["jax_seconds"]), float(r["torch_seconds"]), float(r["flops"])
        assert float(r["ratio_jax_torch"]) == pytest.approx(j / t, 1e-6)
        assert float(r["jax_gflops"]) == pytest.approx(f / j / 1e9, 1e-6)
        assert float(r["jax_vs_matmul"]) == pytest.approx(f / j / 1e9 / mm["jax_gflops"], 1e-6)
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


CHECKS = {
    "style_weight_sweep": _style_weight_sweep,
    "layer_choice": _layer_choice,
    "pooling_convergence": _pooling_convergence,
    "johnson_checkpoints": _johnson_checkpoints,
    "compare_methods": _compare_methods,
    "bench_vs_torch": _bench_vs_torch,
}


# ---------------------------------------------------------------------------------------------
# Helpers of the scripts, without running them.


@pytest.mark.real_weights
def test_readme_figures_copies_outputs_but_not_inputs(smoke_runs, tmp_path):
    done = {name: f.result() for name, f in smoke_runs.items()}
    done = {name: out for name, (proc, out) in done.items() if proc.returncode == 0}
    if not done:
        pytest.skip("no smoke run was selected")
    root = next(iter(done.values())).parent
    proc = subprocess.run(
        [sys.executable, str(EXPERIMENTS / "readme_figures.py"), "--results", str(root)]
        + ["--to", str(tmp_path / "docs")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, out in done.items():
        copied = tmp_path / "docs" / name
        assert (copied / "summary.md").read_text() == (out / "summary.md").read_text()
        assert not (copied / "sheet.png").exists()  # it shows the uncommitted input images
        if list((out / "outputs").glob("*.png")):
            with Image.open(copied / "outputs.png") as im:
                assert im.format == "PNG" and im.width <= 760 and im.mode == "P"


def test_stop_improving_and_trend():
    common = load_script("common")
    assert common.stop_improving([10, 5, 2, 1.999, 1.998], 0.01) == 3
    assert common.stop_improving([10, 20, 30], 0.01) == 1  # never improved on the first
    assert common.stop_improving([10, float("nan"), 1], 0.01) == 3
    assert common.trend([1, 2, 3]) == "rises"
    assert common.trend([3, 2, 2]) == "falls"
    assert common.trend([1, 1.00001]) == "flat"
    assert common.trend([1, 3, 2]) == "mixed"


def test_binomial_p_matches_a_hand_count():
    cm = load_script("compare_methods")
    assert cm.binomial_p(1, 2) == pytest.approx(1.0)
    assert cm.binomial_p(0, 3) == pytest.approx(2 / 8)  # P(0) + P(3)
    assert cm.binomial_p(59, 80) < 1e-4  # the report's survey


def test_analytic_flops_of_vgg_match_a_hand_count():
    bench = load_script("bench_vs_torch")
    # conv1_1 and conv1_2 at 4x4: 2*16*9*(3*64 + 64*64).
    assert bench.vgg_forward_flops("vgg16", 4, 4, ["relu1_2"])["conv"] == 2 * 16 * 9 * (
        3 * 64 + 64 * 64
    )
    v = bench.vgg_forward_flops("vgg16", 8, 6, ["conv2_1"])
    assert v["shapes"]["conv2_1"] == (4, 3, 128)


def test_contact_sheet_and_outputs(tmp_path):
    common = load_script("common")
    rng = np.random.default_rng(0)
    rows = [[(rng.random((20, 30, 3)), "a\nb"), (rng.random((30, 20, 3)), "c")]]
    sheet = common.contact_sheet(rows, "title", height=40)
    assert sheet.height > 40 and sheet.width >= 30 + 20
    out = common.Outputs(tmp_path, "x", None)
    out.csv("t.csv", [{"a": 1.0, "b": float("nan")}, {"a": 2, "c": "z"}])
    assert read_csv(tmp_path / "t.csv") == [
        {"a": "1.0", "b": "", "c": ""},
        {"a": "2", "b": "", "c": "z"},
    ]
    out.json("t.json", {"x": float("inf"), "y": np.float32(1.5)})
    assert json.loads((tmp_path / "t.json").read_text()) == {"x": None, "y": 1.5}
    assert common.fmt(10000.0) == "10000" and common.fmt(0.0123456) == "0.01235"
