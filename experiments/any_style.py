"""python -m experiments.any_style [--out DIR] [--smoke] --multi M --adain M   (1 min, 2 CPU cores)

--smoke (random tiny multi-style network and random AdaIN network, 64 px): about 30 s.
Both runtimes were measured (JAX 0.10.2).

What the two any-style networks of issue 9 do with one content image (``--content``, default
tubingen, which the README's training runs did not train on):

* ``outputs/multi_K-STYLE.png``: the multi-style network (``--multi``: a workdir or an exported
  model) applied with each of its styles (``apply --style-index K``);
* ``outputs/mix_I-T.png``: style A to style B in 5 steps (``--style-mix``, ``--pair A,B``);
* ``outputs/adain_STYLE.png``: the AdaIN network (``--adain``) with each image of
  ``--style-dir``;
* ``outputs/alpha_A.png``: AdaIN strength alpha = 0, 0.25, 0.5, 0.75, 1 (``--alpha``);
* ``sheet.png``: all of them, with the content and style images;
* ``summary.md``, ``networks.csv`` and ``results.json``: each network's training (steps, crop
  size, wall time and first/last losses from the workdir's ``metrics.jsonl`` when a workdir is
  given).

Every image is made by the library calls ``jaxstyle apply`` makes
(:func:`jaxstyle.inference.apply_images`, :func:`jaxstyle.inference.apply_adain`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from experiments.lib import cli, inputs, outputs, paths

NAME = "any_style"
STEPS = 5
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def training_record(model: Path) -> dict[str, Any]:
    """How a network was trained: its workdir's config and metrics, or a file's metadata."""
    from jaxstyle import inference

    kind, _, _, meta = inference.load_any(model)
    rec: dict[str, Any] = {"model": str(model), "kind": kind}
    metrics = model / "metrics.jsonl" if model.is_dir() else None
    if metrics is not None and metrics.is_file():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        cfg = json.loads((model / "config.json").read_text())
        rec.update(
            steps=rows[-1]["step"] if rows else 0,
            image_size=cfg.get("image_size"),
            batch_size=cfg.get("batch_size"),
            lr=cfg.get("lr"),
            wall_hours=sum(r.get("seconds", 0.0) for r in rows) / 3600,
            first_total=rows[0]["total"] if rows else None,
            last_total=rows[-1]["total"] if rows else None,
            curve=[(r["step"], r["total"]) for r in rows],
        )
    else:
        rec["steps"] = meta.get("steps") or meta.get("step")
    return rec


def smoke_models(folder: Path) -> tuple[Path, Path]:
    """A random tiny multi-style network (2 styles) and a random AdaIN network, as files."""
    import dataclasses

    import jax

    from jaxstyle import models
    from jaxstyle.nets import adain
    from jaxstyle.nets import transformer_net as tn

    ncfg = dataclasses.replace(tn.TINY, num_styles=2)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda a: np.asarray(a) + 0.3 * rng.standard_normal(a.shape).astype(np.float32),
        tn.init_params(ncfg, jax.random.PRNGKey(0)),
    )
    multi = models.save_model(
        folder / "multi.safetensors", params, ncfg, {"styles": json.dumps(["a.png", "b.png"])}
    )
    ada = models.save_adain_model(folder / "adain.safetensors", adain.init_params(0))
    return multi, ada


def main(argv: list[str] | None = None) -> dict:
    ap = cli.parser(__doc__, NAME)
    ap.add_argument("--multi", help="multi-style network: workdir or model file")
    ap.add_argument("--adain", help="AdaIN network: workdir or model file")
    ap.add_argument("--content", default="tubingen", help="content image (name or path)")
    ap.add_argument("--size", type=int, default=384, help="content long side")
    ap.add_argument("--style-size", type=int, default=512, help="AdaIN style long side")
    ap.add_argument("--pair", type=cli.csv_list(int), default=(2, 0), help="styles A,B to blend")
    args = cli.parse(ap, argv)
    cli.smoke(args, ap, size=64, style_size=64, pair=(0, 1))
    from jaxstyle import demo, inference, models

    out = outputs.Outputs(args.out, NAME, args)
    if args.smoke:
        multi_path, adain_path = smoke_models(out.path("models"))
        content = demo.demo_images()[0]
        content_name = "demo"
    else:
        if not (args.multi and args.adain):
            cli.fail("give --multi MODEL and --adain MODEL (workdirs or model files)")
        multi_path, adain_path = Path(args.multi), Path(args.adain)
        cpath = inputs.find_image(args, "content", args.content)
        content, content_name = inputs.load(cpath, args.size), cpath.stem
    from jaxstyle import images as imlib

    content = imlib.resize_long_side(content, args.size)
    style_dir = inputs.image_dir(args, "style") if not args.smoke else None

    # Multi-style: each style, then A -> B.
    kind, params, ncfg, meta = inference.load_any(multi_path)
    if kind != "multistyle":
        cli.fail(f"--multi {multi_path}: a {kind} model, not a multi-style network")
    names = models.style_names(meta)
    stems = [Path(n).stem for n in names]

    def save(rel: str, image: np.ndarray, label: str) -> tuple[np.ndarray, str]:
        out.image(f"outputs/{rel}.png", image)
        return image, label

    thumbs = []
    for name in names:
        found = paths.lookup(style_dir, Path(name).stem) if style_dir else None
        if found is not None:
            thumbs.append((inputs.load(found, 256), name))
    row = [(content, f"content: {content_name}")]
    for k, stem in enumerate(stems):
        vec = np.eye(ncfg.num_styles, dtype=np.float32)[k]
        y = inference.apply_images(params, ncfg, [content], style=vec)[0]
        row.append(save(f"multi_{k}-{stem}", y, f"--style-index {k}"))
    sheet = [r for r in (thumbs, row) if r]
    a, b = args.pair
    strip = []
    for i, t in enumerate(np.linspace(0.0, 1.0, STEPS)):
        mix = np.zeros(ncfg.num_styles, np.float32)
        mix[a], mix[b] = 1 - t, t
        y = inference.apply_images(params, ncfg, [content], style=mix)[0]
        label = f"{1 - t:.2f} {stems[a]}\n{t:.2f} {stems[b]}"
        strip.append(save(f"mix_{i}-{t:.2f}", y, label))
    sheet.append(strip)

    # AdaIN: each style of the folder, then alpha.
    kind, aparams, _, _ = inference.load_any(adain_path)
    if kind != "adain":
        cli.fail(f"--adain {adain_path}: a {kind} model, not an AdaIN network")
    if args.smoke:
        styles = [("demo", demo.demo_images()[1])]
    else:
        styles = [
            (p.stem, inference.load_style(p, args.style_size)) for p in paths.list_images(style_dir)
        ]
    sheet.append([(imlib.resize_long_side(s, 256), n) for n, s in styles])
    sheet.append(
        [
            save(f"adain_{n}", inference.apply_adain(aparams, [content], [s])[0], f"AdaIN: {n}")
            for n, s in styles
        ]
    )
    n0, s0 = styles[min(1, len(styles) - 1)]
    sheet.append(
        [
            save(
                f"alpha_{al:.2f}",
                inference.apply_adain(aparams, [content], [s0], alpha=float(al))[0],
                f"--alpha {al} ({n0})",
            )
            for al in ALPHAS
        ]
    )
    out.sheet(
        "sheet.png",
        sheet,
        f"multi-style network ({ncfg.num_styles} styles), A -> B, AdaIN styles, AdaIN alpha",
    )

    records = {"multi": training_record(multi_path), "adain": training_record(adain_path)}
    out.json("results.json", {"networks": records, "styles": names, "pair": [a, b]})
    columns = ["network", "kind", "steps", "image_size", "batch_size", "lr", "wall_hours"]
    columns += ["first_total", "last_total"]
    rows = [
        {"network": label, **{k: v for k, v in r.items() if k in columns}}
        for label, r in records.items()
    ]
    out.csv("networks.csv", rows)
    out.summary(
        "Any-style networks: a multi-style network and AdaIN",
        [
            "## Networks\n\n"
            + outputs.md_table(rows, columns)
            + "\nSteps, crop size, batch, learning rate, hours of training and the first and last "
            "recorded total loss, from each workdir's `config.json` and `metrics.jsonl` (blank "
            "for a model file).",
            f"Content: {content_name}, {content.shape[1]}x{content.shape[0]} px. Styles of "
            f"the multi-style network: {', '.join(names)}; interpolation between "
            f"{names[a]} and {names[b]}.",
        ],
    )
    print(f"wrote {out.dir}: " + ", ".join(sorted(set(out.written))))
    return records


if __name__ == "__main__":
    main()
