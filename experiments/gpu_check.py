"""python -m experiments.gpu_check [--out DIR] [--smoke]   (under 5 minutes on one accelerator)

Every path that only runs on an accelerator, exercised once, with the figures the papers and
anchors are compared on, printed as one table (and written to ``results.json`` / ``results.md``
under ``--out``):

* Gatys at 512 px x 500 L-BFGS iterations (the loop kind ``auto`` picks on the backend: chunks
  as one ``lax.while_loop`` program on GPU/TPU) -- wall time, compile time included and apart;
* Johnson training steps/s at batch 4 and 16 (256 px), float32 and bfloat16, the batch sharded
  over every device as ``jaxstyle train`` does;
* ``apply`` (the bucketed inference path) images/s at 256 and 1024 px, and the multi-style and
  AdaIN networks at 512 px;
* each device's peak memory.

Anchors: Johnson et al. 2016 Table 1 (Titan X: Gatys 512 px, 500 iterations 54.85 s;
feed-forward 0.05 s at 512 px); jcjohnson/neural-style README (Pascal Titan X: 22-45 s for 500
iterations at 512 px).

Runs where only jax, flax and optax are installed, if the pure-Python or binary wheels of
jaxopt, safetensors, pillow and tqdm are carried along (``pip install --no-deps wheels/*.whl``;
``pip download --only-binary=:all: --python-version 3.12 --no-deps -d wheels jaxopt safetensors
pillow tqdm``). The VGG16 weights come from the cache when there (``JAXSTYLE_HOME``), else
random weights of the same shapes are used (the table says which: speed does not depend on
them). Network weights are random throughout: only time and memory are measured. ``--smoke``:
tiny sizes on any backend, for the tests (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from experiments.lib import timing

SETTINGS = {
    "full": {
        "gatys_size": 512, "gatys_iterations": 500, "train_size": 256, "train_batches": (4, 16),
        "train_steps": 10, "apply_sizes": (256, 1024), "apply_images": 8, "kinds_size": 512,
    },
    "smoke": {
        "gatys_size": 48, "gatys_iterations": 4, "train_size": 32, "train_batches": (2,),
        "train_steps": 2, "apply_sizes": (32,), "apply_images": 2, "kinds_size": 32,
    },
}  # fmt: skip


def picture(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth synthetic colour image (no image files needed), float32 HWC in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w, 3), np.float32)
    for _ in range(6):
        f = rng.uniform(1, 8, 2) * np.pi / np.array([h, w])
        phase, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.3, 3)
        out += amp * np.sin(f[0] * yy + f[1] * xx + phase)[..., None]
    return ((out - out.min()) / (np.ptp(out) + 1e-6)).astype(np.float32)


def load_vgg():
    """The cached VGG16 (real weights), else random weights of its shapes; and which."""
    import jax

    from jaxstyle.nets.vgg import VGGNet, init_params

    try:
        from jaxstyle import weights as jw

        path = jw.cache_path("vgg16")
        if path.is_file():
            params, meta = jw.load(path, "vgg16")
            params = jax.tree_util.tree_map(jax.numpy.asarray, params)
            return VGGNet(params=params, arch="vgg16", convention=meta["convention"]), "cached"
    except Exception as e:  # a missing optional reader is not a reason to stop the check
        print(f"(VGG16 weights not loaded: {e}; random weights)", file=sys.stderr)
    return VGGNet(params=init_params("vgg16", jax.random.PRNGKey(0)), arch="vgg16"), "random"


def check_gatys(s: dict, vgg) -> dict:
    from jaxstyle.configs import GatysConfig
    from jaxstyle.gatys import programs
    from jaxstyle.gatys.stylize import stylize

    size, iters = s["gatys_size"], s["gatys_iterations"]
    cfg = GatysConfig(size=size, iterations=iters, progress_every=100)
    content, style = picture(size, size, 0), picture(size, size, 1)
    t = time.perf_counter()
    result = stylize([content], [style], vgg, cfg, progress=False)
    wall = time.perf_counter() - t
    summary = result.log["summary"]
    return {
        "gatys_size": size,
        "gatys_iterations": iters,
        "gatys_loop": programs.loop_kind(cfg),
        "gatys_wall_s": round(wall, 2),
        "gatys_compile_s": round(summary["compile_seconds"], 2),
        "gatys_final_loss": float(result.log["iterations"][-1]["total"]),
        "gatys_failed": result.failed,
    }


def check_train(s: dict, vgg, batch: int, dtype: str, num_styles: int = 1) -> dict:
    """Training steps/s of the full Johnson network (``num_styles`` > 1: conditional instance
    norm, each image its own style), the batch sharded over every device."""
    import jax

    from jaxstyle import train
    from jaxstyle.configs import TrainConfig

    size = s["train_size"]
    cfg = TrainConfig(batch_size=batch, image_size=size, dtype=dtype)
    ncfg = train.net_config(cfg, num_styles)
    sh = train.make_shardings(batch)
    tx = train.make_optimizer(cfg)
    state = jax.device_put(train.create_train_state(cfg, tx, ncfg), sh.replicated)
    styles = [picture(size, size, 10 + k) for k in range(num_styles)]
    vgg = vgg.with_pooling("max")
    grams = train.stacked_style_grams(vgg, styles, tuple(cfg.style_layers))
    if num_styles == 1:
        grams = {k: g[0] for k, g in grams.items()}
    consts = jax.device_put((vgg, grams, train.loss_weights(cfg)), sh.replicated)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    batch_arr = jax.device_put(data, sh.batch)
    t = time.perf_counter()
    step = train.make_train_step(cfg, tx, ncfg).lower(state, batch_arr, *consts).compile()
    compile_s = time.perf_counter() - t
    state, terms = step(state, batch_arr, *consts)  # warm-up
    jax.block_until_ready(terms)
    n = s["train_steps"]
    t = time.perf_counter()
    for _ in range(n):
        state, terms = step(state, batch_arr, *consts)
    loss = float(terms["total"]) if "total" in terms else float(sum(terms.values()))
    per_s = n / (time.perf_counter() - t)
    return {"steps_per_s": round(per_s, 3), "compile_s": round(compile_s, 1), "loss": loss}


def check_apply(s: dict, size: int, n: int, num_styles: int = 1) -> dict:
    """Images/s of ``apply``'s bucketed path on the full network (after a warm-up call)."""
    import jax

    from jaxstyle.inference import apply_images
    from jaxstyle.nets import transformer_net as tn

    ncfg = tn.FULL if num_styles == 1 else tn.NetConfig(num_styles=num_styles)
    params = tn.init_params(ncfg, jax.random.PRNGKey(0))
    images = [picture(size, size, 20 + i) for i in range(n)]
    style = tn.style_vector(num_styles, index=0) if num_styles > 1 else None
    batch = min(n, 8)

    def run():
        return apply_images(params, ncfg, images, batch_size=batch, style=style)

    sec = timing.median_time(run, 2)  # after one warm-up call
    return {"images_per_s": round(n / sec, 2), "seconds_per_image": round(sec / n, 4)}


def check_adain(s: dict) -> dict:
    import jax

    from jaxstyle.nets import adain

    size = s["kinds_size"]
    params = jax.tree_util.tree_map(jax.numpy.asarray, adain.init_params(0, "vgg19"))
    content = picture(size, size, 30)[None]
    style = picture(size, size, 31)

    def run():
        return adain.stylize(params, content, [style]).block_until_ready()

    sec = timing.median_time(run, 3)  # after one warm-up call
    return {"images_per_s": round(1 / sec, 2), "seconds_per_image": round(sec, 4)}


def peak_memory() -> list[float | None]:
    """Each device's peak memory in GiB (None where the backend does not report it)."""
    import jax

    out = []
    for d in jax.devices():
        stats = d.memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
        out.append(round(peak / 2**30, 2) if peak is not None else None)
    return out


def section(results: dict, name: str, fn: Callable[[], dict]) -> None:
    """Runs one check; a failure is recorded in the table and the next check still runs."""
    print(f"{name} ...", flush=True)
    t = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as e:  # the check's point is to report every path, working or not
        results[name] = {"error": f"{type(e).__name__}: {e}"}
    results[name]["check_s"] = round(time.perf_counter() - t, 1)
    print(f"  {results[name]}", flush=True)


def table(r: dict) -> str:
    rows = ["| check | result |", "|---|---|"]
    for name, v in r.items():
        if name == "env":
            continue
        if "error" in v:
            cell = f"failed: {v['error']}"
        elif name == "gatys":
            cell = (
                f"{v['gatys_size']} px x {v['gatys_iterations']} iterations: {v['gatys_wall_s']}"
                f" s wall ({v['gatys_compile_s']} s compiling; loop {v['gatys_loop']})"
            )
        elif name.startswith("train"):
            cell = f"{v['steps_per_s']} steps/s (compile {v['compile_s']} s)"
        elif name == "peak_memory":
            cell = ", ".join(f"{g} GiB" for g in v["per_device_gib"])
        else:
            cell = f"{v['images_per_s']} images/s ({v['seconds_per_image']} s per image)"
        rows.append(f"| {name} | {cell} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m experiments.gpu_check", description=__doc__)
    ap.add_argument("--out", default="out/gpu_check", help="output folder")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (tests, any backend)")
    args = ap.parse_args(argv)
    import jax

    s = SETTINGS["smoke" if args.smoke else "full"]
    results: dict = {
        "env": {
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "python": sys.version.split()[0],
        }
    }
    vgg, which = load_vgg()
    results["env"]["vgg16_weights"] = which
    print(results["env"], flush=True)
    section(results, "gatys", lambda: check_gatys(s, vgg))
    n_dev = jax.device_count()
    for b in s["train_batches"]:
        b = max(b, n_dev) // n_dev * n_dev  # divisible by the devices
        for dtype in ("float32", "bfloat16"):
            section(results, f"train_b{b}_{dtype}", lambda b=b, d=dtype: check_train(s, vgg, b, d))
    b = s["train_batches"][0]
    section(results, f"train_multistyle4_b{b}", lambda: check_train(s, vgg, b, "float32", 4))
    for size in s["apply_sizes"]:
        section(results, f"apply_{size}", lambda z=size: check_apply(s, z, s["apply_images"]))
    k = s["kinds_size"]
    section(results, f"apply_multistyle_{k}", lambda: check_apply(s, k, s["apply_images"], 4))
    section(results, f"adain_{k}", lambda: check_adain(s))
    results["peak_memory"] = {"per_device_gib": peak_memory()}
    md = table(results)
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "results.md").write_text(md + "\n")
    return results


if __name__ == "__main__":
    main()
