"""python -m experiments.bench_serve [--size 256 512] [--requests 20]   (defaults: not yet timed)

The server's overhead per ``POST /api/apply``: a real ``jaxstyle serve`` in its own process (as a
user starts it) answering ``--requests`` requests per image size over one keep-alive HTTP
connection, against the same model called directly in this process (``jaxstyle.load_model``
on an array) on the same image. Medians after a warm-up request (compilation excluded), in
milliseconds, and their difference: the overhead. The overhead is split into what any program
that reads and writes image files also pays (decoding the uploaded PNG with the CLI's guards,
encoding the result as PNG; timed apart in this process) and the rest (HTTP, multipart parsing,
the temporary upload file, threads).

The network is the FULL Johnson network with random weights (speed does not depend on them;
``--net tiny`` for a quick check); the image is ``jaxstyle demo``'s content photo resized to
each ``--size`` (long side). Writes ``results.json``, ``results.csv`` and ``summary.md`` under
``--out``. Runtime: ``--net tiny --size 64 128 --requests 5`` took 64 s on 2 busy CPU cores
(mostly starting the server and compiling); the defaults have not been timed yet.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.lib import outputs, timing


def start_server(models_dir: Path) -> tuple[subprocess.Popen, str]:
    """``jaxstyle serve --port 0`` in a subprocess; returns it and its base URL once it answers."""
    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxstyle.cli", "serve", "--port", "0", "--quiet",
         "--models", str(models_dir)],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    line = proc.stderr.readline()
    if not line.startswith("jaxstyle serve: http://"):
        proc.kill()
        raise SystemExit(f"error: the server did not start: {line}{proc.stderr.read()}")
    url = line.split()[2]
    deadline = time.time() + 60
    while True:
        try:
            httpx.get(url + "api/models", timeout=5).raise_for_status()
            return proc, url
        except httpx.TransportError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("error: the server did not answer within a minute") from None
            time.sleep(0.2)


def time_requests(client, url: str, model: str, png: bytes, n: int) -> list[float]:
    """Seconds of ``n`` apply requests (one warm-up first), each until the whole PNG arrived."""
    times = []
    for k in range(n + 1):
        t = time.perf_counter()
        r = client.post(
            url + "api/apply",
            files={"image": ("image.png", png, "image/png")},
            data={"model": model},
        )
        elapsed = time.perf_counter() - t
        if r.status_code != 200 or r.content[:4] != b"\x89PNG":
            raise SystemExit(f"error: apply request failed: {r.status_code} {r.text[:300]}")
        if k:
            times.append(elapsed)
    return times


def main(argv: list[str] | None = None) -> None:
    import httpx
    import jax

    import jaxstyle
    from jaxstyle import demo, models, serve
    from jaxstyle import images as imlib
    from jaxstyle.nets import transformer_net as tn

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    ap.add_argument("--out", default="out/bench_serve", help="output folder")
    ap.add_argument("--size", type=int, nargs="+", default=[256, 512], help="image long sides")
    ap.add_argument("--requests", type=int, default=20, help="timed requests per size")
    ap.add_argument("--net", choices=("full", "tiny"), default="full", help="network size")
    args = ap.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.requests < 1 or any(s < 16 for s in args.size):
        raise SystemExit("error: --requests must be >= 1 and every --size >= 16")
    out = outputs.Outputs(args.out, "bench_serve", args)
    config = tn.FULL if args.net == "full" else tn.TINY
    tmp = Path(tempfile.mkdtemp(prefix="bench_serve."))
    (tmp / "models").mkdir()
    params = tn.init_params(config, jax.random.PRNGKey(0))
    name = f"{args.net}.safetensors"
    models.save_model(tmp / "models" / name, params, config, {"style": "random"})
    model = jaxstyle.load_model(tmp / "models" / name)
    photo = demo.demo_images()[0]
    proc, url = start_server(tmp / "models")
    rows = []
    try:
        with httpx.Client(timeout=600) as client:
            for size in args.size:
                path = imlib.save_image(
                    tmp / f"image{size}.png", imlib.resize_long_side(photo, size)
                )
                png = path.read_bytes()
                http = statistics.median(time_requests(client, url, name, png, args.requests))
                image = imlib.load_image(path)
                direct = timing.median_time(lambda image=image: model(image), args.requests)
                result = model(image)

                def decode_encode(path=path, result=result):  # the file work around the model
                    imlib.load_image(path)
                    serve.png_bytes(result)

                files = timing.median_time(decode_encode, args.requests)
                rows.append(
                    {
                        "size": size,
                        "pixels": int(image.shape[0] * image.shape[1]),
                        "upload_bytes": len(png),
                        "http_ms": 1e3 * http,
                        "model_ms": 1e3 * direct,
                        "overhead_ms": 1e3 * (http - direct),
                        "png_decode_encode_ms": 1e3 * files,
                        "http_framework_ms": 1e3 * (http - direct - files),
                        "overhead_pct": 100 * (http - direct) / direct,
                    }
                )
                print(
                    f"{size:5d} px: request {1e3 * http:8.1f} ms, model {1e3 * direct:8.1f} ms, "
                    f"overhead {1e3 * (http - direct):7.1f} ms (PNG decode+encode "
                    f"{1e3 * files:6.1f} ms, HTTP and the rest {1e3 * (http - direct - files):6.1f}"
                    f" ms)",
                    flush=True,
                )
    finally:
        proc.terminate()
        proc.wait(30)
    out.json(
        "results.json",
        {"env": outputs.run_env(), "net": args.net, "requests": args.requests, "rows": rows},
    )
    out.csv("results.csv", rows)
    columns = ["size", "http_ms", "model_ms", "overhead_ms", "png_decode_encode_ms",
               "http_framework_ms", "overhead_pct"]  # fmt: skip
    out.summary(
        "jaxstyle serve: overhead per apply request",
        [
            f"Medians of {args.requests} requests per size after a warm-up, the {args.net.upper()}"
            " Johnson network; `overhead_ms` = request round trip minus the model called "
            "directly on the decoded array.",
            outputs.md_table(rows, columns),
        ],
    )
    print(f"wrote {out.dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
