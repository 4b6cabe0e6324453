"""python -m experiments.bench_export [--size 256 1024] [--repeats 3]   (5 minutes on 2 CPU cores)

Exported programs against ``jaxstyle apply`` on the FULL Johnson network (random weights: speed
does not depend on them), batch 1, one image per size: seconds per image after a warm-up call
(compilation excluded), the median of ``--repeats``, side by side as a ratio to apply. apply is
timed as the gaps between images of one ``apply_images`` call (its padding, bucket canvas and
host work included). TFLite files have a fixed shape, so one file per size; their sizes are
printed for float32 and float16 weights. Writes nothing outside a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from experiments.lib import timing


def time_apply(params, config, x: np.ndarray, repeats: int) -> float:
    from jaxstyle.inference import apply_images

    stamps = []
    apply_images(params, config, [x] * (repeats + 1), batch_size=1,
                 on_done=lambda i, y: stamps.append(time.perf_counter()))  # fmt: skip
    return statistics.median(np.diff(stamps))


def main() -> None:
    import tensorflow as tf

    from jaxstyle import export
    from jaxstyle.nets import transformer_net as tn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    config = tn.FULL
    params = tn.init_params(config, jax.random.PRNGKey(0))
    prog = export.program("johnson", params, config)
    tmp = Path(tempfile.mkdtemp(prefix="bench_export."))
    exp = jax.export.deserialize(bytearray(export.to_stablehlo(prog)))
    stablehlo = jax.jit(exp.call)
    export.write_savedmodel(prog, tmp / "sm")
    saved = tf.saved_model.load(str(tmp / "sm")).signatures["serving_default"]
    print(f"{'size':>5} {'apply s':>8} {'stablehlo':>15} {'savedmodel':>15} {'tflite f32':>15} "
          f"{'tflite f16':>15}  tflite MB f32/f16")  # fmt: skip
    for size in args.size:
        x = np.random.default_rng(0).random((1, size, size, 3), np.float32)
        base = time_apply(params, config, x[0], args.repeats)
        row = {
            "stablehlo": timing.median_time(
                lambda x=x: stablehlo(x).block_until_ready(), args.repeats
            ),
            "savedmodel": timing.median_time(
                lambda x=x: saved(images=tf.constant(x)), args.repeats
            ),
        }
        mb = []
        for q in (None, "float16"):
            data = export.tflite_bytes(prog, (size, size), q)
            mb.append(len(data) / 1e6)
            it = tf.lite.Interpreter(model_content=data, num_threads=2)
            it.allocate_tensors()
            i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
            it.set_tensor(i, x)
            row[f"tflite {q or 'f32'}"] = timing.median_time(it.invoke, args.repeats)
            it.get_tensor(o)
        cells = " ".join(f"{t:6.3f} ({t / base:4.2f}x)" for t in row.values())
        print(f"{size:>5} {base:8.3f} {cells}  {mb[0]:.2f}/{mb[1]:.2f}", flush=True)


if __name__ == "__main__":
    main()
