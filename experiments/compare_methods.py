"""python -m experiments.compare_methods [--out DIR] [--smoke]   (12 minutes on 2 CPU cores)

--smoke (two content images at 48 px, 2 Gatys iterations, a tiny network trained 2 steps):
about 40 s. Both runtimes were measured (JAX 0.10.2). Tally votes with
``python -m experiments.compare_methods --out DIR --tally VOTES...``.

The report's section 7.2: one style and four content images, stylised by Gatys et al.
(iterative, jaxstyle's L-BFGS) and by Johnson et al. (feed-forward), side by side with the
seconds each method spends per image, and a blind A/B page to repeat its preference survey
(20 people, 80 votes: 59 for Gatys, 21 for Johnson) with real people.

Gatys runs with jaxstyle's defaults (VGG16, relu4_2 content, relu1_1-relu5_1 style,
``--style-weight`` 10) at ``--size`` for ``--iterations`` (100; the library default is 500);
its flags are ``jaxstyle stylize``'s. Johnson uses
``--model`` (a training workdir or a model file from ``jaxstyle train``/``jaxstyle export``) or,
without it, trains one here on ``--train-data`` (default: ``--content-dir`` itself, four
photos, so the network is tested on its training images; the report trained on COCO):
``--train-steps 300`` steps of the full network at 128 px, about 14 minutes; the report's 10,000
steps at 256 px are ``--train-steps 10000 --train-size 256``.

Seconds per image: Gatys' optimisation time (compilation reported apart); Johnson's network
time per image, the median of 3 runs after a warm-up (compilation and training apart).

Writes ``sheet.png`` (content, style, Gatys, Johnson per row), ``results.csv``,
``results.json``, ``loss_curves.png`` (Gatys per image, and Johnson training), ``summary.md``,
and the survey: ``ab/index.html`` with ``ab/img/`` (open it in a browser; the left/right order
and the file names are random, the page holds no method names; each voter clicks a preference
per pair and presses "Save votes", which downloads a JSON file) and ``ab_key.json`` (which
image is which, kept outside ``ab/`` so the folder can be shared). ``--tally`` reads the key
and any number of vote files and writes ``tally.json`` and ``tally.md`` with counts per method,
per pair, per side, and an exact two-sided binomial test against no preference.
"""

from __future__ import annotations

import functools
import html
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from experiments.lib import analysis, cli, inputs, outputs, report

NAME = "compare_methods"


def binomial_p(k: int, n: int) -> float:
    """Exact two-sided binomial test of ``k`` successes in ``n`` trials against p = 1/2."""
    if n == 0:
        return 1.0
    probs = [math.comb(n, i) / 2**n for i in range(n + 1)]
    return float(min(1.0, sum(p for p in probs if p <= probs[k] * (1 + 1e-9))))


def write_ab_page(out: outputs.Outputs, items, seed: int) -> dict:
    """The blind A/B page: ``items`` is ``[(pair name, {method: image})]``.

    Returns the key: which file is which method, and the order shown.
    """
    rng = np.random.default_rng(seed)
    page_id = f"{NAME}-{seed}-{int(time.time())}"
    key = {"page": page_id, "images": {}, "pairs": []}
    blocks = []
    for i, (name, by_method) in enumerate(items):
        methods = list(by_method)
        order = [methods[j] for j in rng.permutation(len(methods))]
        ids = []
        for method in order:
            token = "".join(rng.choice(list("abcdefghijkmnpqrstuvwxyz23456789"), 10))
            out.image(f"ab/img/{token}.png", by_method[method])
            key["images"][token] = {"method": method, "pair": i}
            ids.append(token)
        key["pairs"].append({"pair": i, "name": name, "left": ids[0], "right": ids[1]})
        imgs = "".join(
            f'<img src="img/{t}.png" data-id="{t}" data-side="{side}" alt="option {side}">'
            for t, side in zip(ids, ("left", "right"), strict=True)
        )
        blocks.append(f'<div class="pair" data-pair="{i}"><h2>Pair {i + 1}</h2>{imgs}</div>')
    page = AB_HTML.replace("{{PAGE}}", html.escape(page_id)).replace("{{PAIRS}}", "\n".join(blocks))
    out.text("ab/index.html", page)
    return key


AB_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Which image do you prefer?</title>
<style>
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; }
.pair img { max-width: 48%; margin: 0.5%; border: 4px solid transparent; cursor: pointer; }
.pair img.chosen { border-color: #2a7; }
#status { color: #555; }
</style></head>
<body>
<h1>Which image do you prefer?</h1>
<p>For each pair, click the image you like better. Both are the same photo in the same
artistic style, made by two different programs; the order is random. When you are done,
press <b>Save votes</b> and send the downloaded file back.</p>
<p><label>Your name or initials (optional): <input id="voter"></label></p>
{{PAIRS}}
<p><button id="save">Save votes</button> <span id="status"></span></p>
<script>
const PAGE = "{{PAGE}}";
const votes = JSON.parse(localStorage.getItem(PAGE) || "{}");
function show() {
  document.querySelectorAll(".pair").forEach(p => {
    const v = votes[p.dataset.pair];
    p.querySelectorAll("img").forEach(i =>
      i.classList.toggle("chosen", !!v && v.chosen === i.dataset.id));
  });
  const n = document.querySelectorAll(".pair").length;
  document.getElementById("status").textContent =
    Object.keys(votes).length + " of " + n + " pairs chosen";
}
document.querySelectorAll(".pair img").forEach(img => img.addEventListener("click", () => {
  const pair = img.parentElement.dataset.pair;
  votes[pair] = {pair: Number(pair), chosen: img.dataset.id, side: img.dataset.side};
  localStorage.setItem(PAGE, JSON.stringify(votes));
  show();
}));
document.getElementById("save").addEventListener("click", () => {
  const voter = document.getElementById("voter").value.trim();
  const data = {page: PAGE, voter: voter, saved: new Date().toISOString(),
                votes: Object.values(votes)};
  const blob = new Blob([JSON.stringify(data, null, 1)], {type: "application/json"});
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "votes-" + (voter || "anonymous").replace(/[^A-Za-z0-9_-]/g, "_") + ".json";
  a.click();
});
show();
</script>
</body></html>
"""


def tally(out_dir: Path, vote_files: list[str]) -> dict:
    """Counts the votes in ``vote_files`` with the key in ``out_dir/ab_key.json``."""
    key = json.loads((out_dir / "ab_key.json").read_text())
    by_method: dict[str, int] = {}
    by_pair: dict[str, dict[str, int]] = {p["name"]: {} for p in key["pairs"]}
    sides = {"left": 0, "right": 0}
    voters, skipped = 0, []
    for f in vote_files:
        data = json.loads(Path(f).read_text())
        if data.get("page") != key["page"]:
            skipped.append(f"{f}: from another page ({data.get('page')})")
            continue
        voters += 1
        for v in data["votes"]:
            img = key["images"].get(v["chosen"])
            if img is None:
                skipped.append(f"{f}: unknown image {v['chosen']}")
                continue
            m = img["method"]
            by_method[m] = by_method.get(m, 0) + 1
            name = key["pairs"][img["pair"]]["name"]
            by_pair[name][m] = by_pair[name].get(m, 0) + 1
            pair = key["pairs"][img["pair"]]
            side = "left" if pair["left"] == v["chosen"] else "right"
            sides[side] += 1
    n = sum(by_method.values())
    gatys = by_method.get("gatys", 0)
    result = {
        "voters": voters,
        "votes": n,
        "by_method": by_method,
        "by_pair": by_pair,
        "by_side": sides,
        "gatys_share": gatys / n if n else None,
        "binomial_p_two_sided": binomial_p(gatys, n),
        "report": {"votes": 80, "gatys": 59, "johnson": 21, "binomial_p": binomial_p(59, 80)},
        "skipped": skipped,
    }
    return result


def run_tally(args) -> dict:
    out_dir = Path(args.out)
    res = tally(out_dir, args.tally)
    (out_dir / "tally.json").write_text(json.dumps(res, indent=1) + "\n")
    rows = [{"method": m, "votes": v} for m, v in sorted(res["by_method"].items())]
    pairs = [{"pair": p, **c} for p, c in res["by_pair"].items()]
    md = (
        f"# A/B survey tally\n\n{res['voters']} voters, {res['votes']} votes.\n\n"
        + outputs.md_table(rows, ["method", "votes"])
        + "\n"
        + outputs.md_table(pairs, ["pair", "gatys", "johnson"])
        + f"\nLeft chosen {res['by_side']['left']}, right {res['by_side']['right']}. "
        f"Exact two-sided binomial test against no preference: p = "
        f"{outputs.fmt(res['binomial_p_two_sided'])}. The report: 59 of 80 votes for Gatys "
        f"(p = {outputs.fmt(res['report']['binomial_p'])}).\n"
    )
    (out_dir / "tally.md").write_text(md)
    print(md)
    for s in res["skipped"]:
        print("skipped:", s, file=sys.stderr)
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = cli.parser(__doc__, NAME)
    ap.add_argument("--style", default="starry_night", help="name in --style-dir, or a path")
    ap.add_argument(
        "--content",
        nargs="+",
        default=[c for c, _ in report.DEFAULT_PAIRS],
        help="names in --content-dir, or paths",
    )
    gatys_group = ap.add_argument_group("Gatys (jaxstyle stylize's flags; --size for both)")
    cli.gatys_flags(
        gatys_group, ("net", "size", "iterations", "style_weight"), size=256, iterations=100
    )
    johnson = ap.add_argument_group("Johnson")
    johnson.add_argument("--model", default=None, help="model (workdir or file); else train")
    johnson.add_argument("--train-data", default=None, help="folder (default: --content-dir)")
    johnson.add_argument("--train-steps", type=int, default=300)
    johnson.add_argument("--train-size", type=int, default=128)
    johnson.add_argument("--transformer", default="full", choices=("full", "tiny"))
    johnson.add_argument("--batch-size", type=int, default=4)
    johnson.add_argument(
        "--johnson-style-weight", type=float, default=None, help="default: train's"
    )
    ap.add_argument("--tally", nargs="+", default=None, metavar="VOTES", help="count votes")
    args = cli.parse(ap, argv)
    if args.tally:
        return run_tally(args)
    cli.smoke(
        args,
        ap,
        size=48,
        iterations=2,
        content=[c for c, _ in report.DEFAULT_PAIRS[:2]],
        train_steps=2,
        train_size=32,
        transformer="tiny",
        batch_size=2,
    )
    sp = inputs.find_image(args, "style", args.style)
    content_files = [inputs.find_image(args, "content", c) for c in args.content]
    if not args.model:
        data = Path(args.train_data) if args.train_data else inputs.image_dir(args, "content")

    import jax
    import jax.numpy as jnp

    from jaxstyle import gatys, inference, train
    from jaxstyle.configs import TrainConfig
    from jaxstyle.nets import transformer_net

    inputs.enable_compile_cache()
    out = outputs.Outputs(args.out, NAME, args)
    net = inputs.load_net(args)
    style = inputs.load(sp, args.size)
    contents = [(p.stem, inputs.load(p, args.size)) for p in content_files]

    # Johnson: a given model, or one trained here.
    training, train_info = [], {}
    if args.model:
        kind, params, ncfg, meta = inference.load_any(args.model)
        if kind != "johnson":
            raise SystemExit(f"error: {args.model}: a {kind} model; this compares Johnson networks")
        train_info = {"model": args.model, "meta": {k: str(v) for k, v in meta.items()}}
    else:
        tcfg = TrainConfig(
            data=f"folder:{data}",
            net=args.transformer,
            image_size=args.train_size,
            style_size=2 * args.train_size,
            batch_size=args.batch_size,
            steps=args.train_steps,
            checkpoint_every=args.train_steps,
            preview_every=args.train_steps,
            log_every=1,
            seed=args.seed,
            **(
                {}
                if args.johnson_style_weight is None
                else {"style_weight": args.johnson_style_weight}
            ),
        )
        workdir = out.path("work")
        shutil.rmtree(workdir, ignore_errors=True)
        t0 = time.perf_counter()
        last = train.train_and_evaluate(tcfg, workdir, str(sp), net, progress=False)
        train_s = time.perf_counter() - t0
        params, ncfg, meta = train.restore_params(workdir)
        training = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
        train_info = {
            "trained_here": True,
            "data": str(data),
            "steps": args.train_steps,
            "image_size": args.train_size,
            "network": args.transformer,
            "style_weight": tcfg.style_weight,
            "train_seconds": train_s,
            "train_compile_seconds": last.get("compile_seconds"),
        }

    # One jitted function for every image: stylize pads sizes not divisible by 4.
    apply = jax.jit(functools.partial(transformer_net.stylize, config=ncfg))
    gcfg = cli.gatys_config(args, progress_every=max(1, min(args.iterations, 50)))
    rows, sheet, curves, ab_items = [], [], {}, []
    for name, content in contents:
        res = gatys.stylize([content], [style], net, gcfg, progress=False)
        s = res.log["summary"]
        g_img = res.images[0]
        curves[name] = analysis.curve(res.log["iterations"], "total")[1]

        x = jnp.asarray(content[None])
        t0 = time.perf_counter()
        j_img = np.asarray(apply(params, x))[0]
        first = time.perf_counter() - t0
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            apply(params, x).block_until_ready()
            times.append(time.perf_counter() - t0)
        j_s = statistics.median(times)
        rows.append(
            {
                "image": name,
                "height": content.shape[0],
                "width": content.shape[1],
                "gatys_seconds": s["optimisation_seconds"],
                "gatys_compile_seconds": s["compile_seconds"],
                "gatys_iterations": s["iterations"],
                "gatys_total_loss": s["total"],
                "johnson_seconds": j_s,
                "johnson_first_call_seconds": first,
                "speedup": s["optimisation_seconds"] / j_s,
            }
        )
        out.image(f"outputs/{name}_gatys.png", g_img)
        out.image(f"outputs/{name}_johnson.png", j_img)
        sheet.append(
            [
                (content, f"content {name}"),
                (style, f"style {sp.stem}"),
                (g_img, f"Gatys, {s['iterations']} L-BFGS its\n{s['optimisation_seconds']:.2f} s"),
                (j_img, f"Johnson\n{j_s:.3f} s"),
            ]
        )
        ab_items.append((name, {"gatys": g_img, "johnson": j_img}))

    key = write_ab_page(out, ab_items, args.seed)
    out.json("ab_key.json", key)
    out.sheet(
        "sheet.png",
        sheet,
        f"Gatys vs Johnson: style {sp.stem}, {args.size} px, seconds per image on "
        f"{outputs.run_env()['machine']}",
    )
    out.csv("results.csv", rows)
    panels = [
        {
            "title": "Gatys: total loss per image",
            "series": [
                {"label": n, "x": list(range(1, len(c) + 1)), "y": c} for n, c in curves.items()
            ],
        }
    ]
    if training:
        panels.append(
            {
                "title": "Johnson training: total loss (batch mean)",
                "xlabel": "step",
                "series": [
                    {
                        "label": "total",
                        "x": [r["step"] for r in training],
                        "y": [r["total"] for r in training],
                    }
                ],
            }
        )
    out.plot("loss_curves.png", panels, f"Gatys vs Johnson, style {sp.stem}")
    means = {
        "image": "mean",
        "gatys_seconds": float(np.mean([r["gatys_seconds"] for r in rows])),
        "johnson_seconds": float(np.mean([r["johnson_seconds"] for r in rows])),
    }
    means["speedup"] = means["gatys_seconds"] / means["johnson_seconds"]
    out.json(
        "results.json",
        {
            "settings": {
                **{k: v for k, v in vars(args).items() if k not in ("out", "tally")},
                "gatys_config": gcfg,
            },
            "johnson": train_info,
            "results": rows,
            "mean": means,
            "gatys_curves": curves,
            "johnson_training": training,
            "env": outputs.run_env(),
        },
    )
    jtrain = ""
    if train_info.get("trained_here"):
        jtrain = (
            f" The Johnson network ({args.transformer}) was trained here for "
            f"{args.train_steps} steps at {args.train_size} px on `{train_info['data']}` in "
            f"{outputs.fmt(train_info['train_seconds'])} s: that cost comes before its first "
            f"image and is amortised over every image of this style."
        )
    out.summary(
        "Gatys vs Johnson (report section 7.2)",
        [
            f"Style {sp.stem}; {len(rows)} content images at {args.size} px. Gatys: "
            f"{args.iterations} L-BFGS iterations, style weight {gcfg.style_weight:g}, layers "
            f"{','.join(gcfg.content_layers)} / {','.join(gcfg.style_layers)}. Johnson: "
            + (f"model `{args.model}`." if args.model else "trained here.")
            + jtrain,
            "## Seconds per image\n\n"
            + outputs.md_table(
                [*rows, means],
                [
                    "image",
                    "gatys_seconds",
                    "gatys_compile_seconds",
                    "johnson_seconds",
                    "johnson_first_call_seconds",
                    "speedup",
                ],
            ),
            "## Survey\n\nOpen `ab/index.html` in a browser (or serve `ab/`), let each person "
            "vote and press *Save votes*, then count with\n\n"
            f"    python -m experiments.{NAME} --out {args.out} --tally votes-*.json\n\n"
            "The report had 80 votes, 59 for Gatys (exact two-sided binomial test p = "
            f"{outputs.fmt(binomial_p(59, 80))}).",
        ],
    )
    print(f"wrote {out.dir}: " + ", ".join(sorted(set(out.written))))
    return {"rows": rows, "key": key}


if __name__ == "__main__":
    main()
