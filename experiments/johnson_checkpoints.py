"""python -m experiments.johnson_checkpoints [--out DIR] [--smoke]   (20 minutes on 2 CPU cores)

--smoke (tiny network, 32 px, batch 2, checkpoints at 2 and 4 steps): about 45 s.
Both runtimes were measured (JAX 0.10.2).

The report's Figure 15 and its over-stylisation remark (section 6.2): one Johnson et al.
training run, its network applied at several step counts side by side, and style weight 2,000
against 1,000 ("the style is being overemphasized" at 2,000).

Each report weight trains its own network (``jaxstyle.train.train_and_evaluate``) on a folder of
content images (``--data``, default ``--content-dir``: ``../shared/images/content`` has four
photos; the report used 80,000 COCO images), in segments that stop at each ``--checkpoints``
step; after each segment the latest checkpoint is restored and applied to the first
``--test`` images at ``--test-size`` px.
Defaults are sized for a CPU: the full network at 128 px crops, batch 4, checkpoints at
100/200/300 steps (about 3 s per step on 2 cores, so about 15 minutes per weight). The report's
values are one flag away: ``--image-size 256 --checkpoints 10000,11000,12000,13000`` (days on a
CPU).

Style weights are the report's mapped to ours by k measured with the Johnson layers (content
relu2_2; style relu1_2, relu2_2, relu3_3, relu4_3), as in ``experiments/lib/report.py``.

``--data photos`` trains on scikit-image's five colour photos and the ``--content-dir`` photos
(copied to ``<out>/photos``). A long run can be spread over several sittings: the weights take
turns checkpoint by checkpoint, training saves every 50 steps, and ``--resume`` (same flags)
reads back the finished checkpoints' outputs and resumes training where it stopped.

Writes ``sheet.png`` (per weight and test image: content, style, output at each checkpoint),
``checkpoints.csv`` (per weight, checkpoint and test image: content/style loss of the output,
mean change since the previous checkpoint), ``training.csv`` (the training metrics per step),
``results.json``, ``loss_curves.png`` and ``summary.md``. Training workdirs (orbax checkpoints,
TensorBoard, each checkpoint's test outputs) are kept under ``<out>/work``, started afresh
unless ``--resume``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

from experiments.lib import cli, inputs, outputs, paths, report
from jaxstyle import fileio

NAME = "johnson_checkpoints"
#: Colour photos that ship with scikit-image (``--data photos``).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")
#: Training checkpoints at most this many steps apart, whatever ``--checkpoints`` says.
SAVE_EVERY = 50


def photo_folder(folder: Path, content_dir: Path) -> Path:
    """``folder`` filled with scikit-image's :data:`PHOTOS` and the photos of ``content_dir``."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
        dest = folder / f"{name}.png"
        if not dest.is_file():
            with fileio.atomic_path(dest) as tmp:
                Image.fromarray(img).save(tmp, format="PNG")
    for p in paths.list_images(content_dir):
        if not (folder / p.name).is_file():
            shutil.copy(p, folder / p.name)
    return folder


def step_seconds(training: list[dict], w_rep: float, prev: int, step: int) -> float:
    """Mean seconds per training step in the segment ``(prev, step]``.

    The segment's first record is left out: it includes the compilation of the train step.
    """
    secs = [
        t["seconds"]
        for t in training
        if t["report_style_weight"] == w_rep and prev + 1 < t["step"] <= step
    ]
    return float(np.mean(secs)) if secs else float("nan")


def main(argv: list[str] | None = None) -> dict:
    ap = cli.parser(__doc__, NAME)
    ap.add_argument("--style", default="starry_night", help="name in --style-dir, or a path")
    ap.add_argument(
        "--data",
        default=None,
        help="folder of training images (default: --content-dir); 'photos': scikit-image's "
        f"{', '.join(PHOTOS)} and the --content-dir photos, copied to <out>/photos",
    )
    ap.add_argument("--test", type=int, default=2, help="test images: the first N of --data")
    ap.add_argument("--test-size", type=int, default=256, help="long side of test outputs")
    ap.add_argument("--transformer", default="full", choices=("full", "tiny"))
    ap.add_argument("--image-size", type=int, default=128, help="training crop size")
    ap.add_argument("--style-size", type=int, default=256, help="style image long side")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--checkpoints", type=cli.csv_list(int), default=(100, 200, 300))
    ap.add_argument("--report-weights", type=cli.csv_list(float), default=(2000.0, 1000.0))
    ap.add_argument(
        "--resume",
        action="store_true",
        help="go on from <out>/work (an earlier run with the same flags): finished checkpoints "
        "are read back, training resumes from its latest checkpoint",
    )
    report.add_mapping_flags(ap)
    args = cli.parse(ap, argv)
    cli.smoke(
        args,
        ap,
        transformer="tiny",
        image_size=32,
        style_size=64,
        batch_size=2,
        checkpoints=(2, 4),
        test_size=32,
    )
    ckpts = sorted(set(args.checkpoints))
    if not ckpts or ckpts[0] < 1:
        ap.error("--checkpoints must be positive step counts")
    if args.data == "photos":
        data = photo_folder(Path(args.out) / "photos", inputs.image_dir(args, "content"))
    else:
        data = Path(args.data) if args.data else inputs.image_dir(args, "content")
    if not data.is_dir() or not (files := paths.list_images(data)):
        cli.fail(f"--data {data}: no images there")
    sp = inputs.find_image(args, "style", args.style)

    from jaxstyle import inference, train
    from jaxstyle.configs import TrainConfig

    inputs.enable_compile_cache()
    out = outputs.Outputs(args.out, NAME, args)
    # Johnson et al.'s loss network, which the trainer uses.
    net = inputs.load_net(args, arch="vgg16")
    style = inputs.load(sp, args.style_size)
    tests = [(p.stem, inputs.load(p, args.test_size)) for p in files[: args.test]]

    base = TrainConfig(data=f"folder:{data}")
    c_layers, s_layers = tuple(base.content_layers), tuple(base.style_layers)
    mapping = report.scale_for(
        args,
        net,
        [(f"{n}+{sp.stem}", img, inputs.load(sp, args.test_size)) for n, img in tests],
        c_layers,
        s_layers,
    )
    k = mapping["k"]

    rows, training, by_image, compile_times = [], [], {}, []
    cfgs, workdirs = {}, {}
    for w_rep in args.report_weights:
        w = report.map_weight(w_rep, k, args.weight_map)
        cfgs[w_rep] = TrainConfig(
            data=f"folder:{data}",
            net=args.transformer,
            image_size=args.image_size,
            style_size=args.style_size,
            batch_size=args.batch_size,
            steps=ckpts[-1],
            lr=args.lr,
            style_weight=w,
            seed=args.seed,
            # Often enough that an interrupted run loses little: --resume goes on from here.
            checkpoint_every=min(ckpts[0], SAVE_EVERY),
            preview_every=ckpts[-1],
            log_every=1,
        )
        workdirs[w_rep] = out.path(f"work/sw{w_rep:g}")
        if not args.resume:
            shutil.rmtree(workdirs[w_rep], ignore_errors=True)
    # Checkpoint by checkpoint, every weight in turn: an interrupted run leaves the weights at
    # (nearly) the same step, and --resume goes on from there.
    for step in ckpts:
        for w_rep in args.report_weights:
            cfg, workdir = cfgs[w_rep], workdirs[w_rep]
            w = cfg.style_weight
            done = workdir / f"outputs_step{step}.npz"
            if done.is_file():  # --resume: this segment finished in an earlier sitting
                with np.load(done) as saved:
                    ys = [saved[f"arr_{i}"] for i in range(len(tests))]
            else:
                # Each segment is a run to `step` (--steps may change on resumption), which
                # ends with a checkpoint there and resumes exactly.
                last = train.train_and_evaluate(
                    dataclasses.replace(cfg, steps=step), workdir, str(sp), net, progress=False
                )
                compile_times.append(
                    {
                        "report_style_weight": w_rep,
                        "step": step,
                        "compile_seconds": last.get("compile_seconds"),
                    }
                )
                params, ncfg, _ = train.restore_params(workdir)
                ys = inference.apply_images(params, ncfg, [img for _, img in tests], bucket=4)
                with fileio.atomic_path(done, suffix=".npz") as tmp:
                    np.savez(tmp, *ys)  # (the test images' sizes differ)
            for (name, img), y in zip(tests, ys, strict=True):
                prev = by_image.get((w_rep, name))
                c, s = report.loss_terms(net, y, img, style, c_layers, s_layers, report=False)
                rows.append(
                    {
                        "report_style_weight": w_rep,
                        "style_weight": w,
                        "step": step,
                        "image": name,
                        "content_loss": c,
                        "style_loss": s,
                        "total_loss": c + w * s,
                        # None at the first checkpoint: nothing to compare with.
                        "mean_abs_change": (
                            float(np.mean(np.abs(y - prev[-1][1]))) if prev else None
                        ),
                    }
                )
                by_image.setdefault((w_rep, name), []).append((step, y))
                out.image(f"outputs/sw{w_rep:g}_{name}_step{step}.png", y)
    for w_rep in args.report_weights:
        w = cfgs[w_rep].style_weight
        for line in (workdirs[w_rep] / "metrics.jsonl").read_text().splitlines():
            r = json.loads(line)
            training.append({"report_style_weight": w_rep, "style_weight": w, **r})

    sheet = []
    for w_rep in args.report_weights:
        w = report.map_weight(w_rep, k, args.weight_map)
        for name, img in tests:
            row = [(img, f"content {name}"), (style, f"style {sp.stem}")]
            for step, y in by_image[(w_rep, name)]:
                r = next(
                    r
                    for r in rows
                    if r["report_style_weight"] == w_rep
                    and r["image"] == name
                    and r["step"] == step
                )
                row.append(
                    (
                        y,
                        f"sw {w_rep:g} (ours {w:g}), step {step}\n"
                        f"content {outputs.fmt(r['content_loss'])}\n"
                        f"style {outputs.fmt(r['style_loss'])}",
                    )
                )
            sheet.append(row)
    out.sheet(
        "sheet.png",
        sheet,
        f"Johnson: {args.transformer} network, {args.image_size} px crops, batch "
        f"{args.batch_size}, outputs at {args.test_size} px",
    )
    out.csv("checkpoints.csv", rows)
    out.csv("training.csv", training)
    out.plot(
        "loss_curves.png",
        [
            {
                "title": f"training {term} loss (batch mean)",
                "xlabel": "step",
                "series": [
                    {
                        "label": f"report sw {w_rep:g}",
                        "x": [r["step"] for r in training if r["report_style_weight"] == w_rep],
                        "y": [r[term] for r in training if r["report_style_weight"] == w_rep],
                    }
                    for w_rep in args.report_weights
                ],
            }
            for term in ("total", "content", "style")
        ],
        f"Johnson training on {len(files)} images of {data.name}/, style {sp.stem}",
    )

    # Findings: change between checkpoints, and the heavier weight's effect at the last step.
    per_step = []
    for w_rep in args.report_weights:
        for prev, step in zip([0, *ckpts], ckpts, strict=False):
            rs = [r for r in rows if r["report_style_weight"] == w_rep and r["step"] == step]
            per_step.append(
                {
                    "report_style_weight": w_rep,
                    "step": step,
                    "mean_content_loss": float(np.mean([r["content_loss"] for r in rs])),
                    "mean_style_loss": float(np.mean([r["style_loss"] for r in rs])),
                    "mean_abs_change": (
                        None
                        if step == ckpts[0]
                        else float(np.mean([r["mean_abs_change"] for r in rs]))
                    ),
                    "seconds_per_step": step_seconds(training, w_rep, prev, step),
                }
            )
    findings = []
    if len(args.report_weights) >= 2:
        hi, lo = max(args.report_weights), min(args.report_weights)
        final = {
            w: next(p for p in per_step if p["report_style_weight"] == w and p["step"] == ckpts[-1])
            for w in (hi, lo)
        }
        more_style = final[hi]["mean_style_loss"] < final[lo]["mean_style_loss"]
        less_content = final[hi]["mean_content_loss"] > final[lo]["mean_content_loss"]
        findings.append(
            f"* At step {ckpts[-1]}, report weight {hi:g} vs {lo:g}: mean style loss "
            f"{outputs.fmt(final[hi]['mean_style_loss'])} vs "
            f"{outputs.fmt(final[lo]['mean_style_loss'])}, mean content loss "
            f"{outputs.fmt(final[hi]['mean_content_loss'])} vs "
            f"{outputs.fmt(final[lo]['mean_content_loss'])}: the heavier weight "
            + (
                "matches the style more closely at the content's expense, as the report saw."
                if more_style and less_content
                else "does not trade content for style here (not the report's observation)."
            )
        )
    if len(ckpts) >= 2:
        for w_rep in args.report_weights:
            ch = [
                p["mean_abs_change"]
                for p in per_step
                if p["report_style_weight"] == w_rep and p["step"] != ckpts[0]
            ]
            findings.append(
                f"* Report weight {w_rep:g}: mean absolute pixel change between consecutive "
                f"checkpoints {', '.join(outputs.fmt(c) for c in ch)} (pixels in [0, 1]); the "
                "report saw no significant difference after 10,000 steps."
            )
    out.json(
        "results.json",
        {
            "settings": {
                **{k: v for k, v in vars(args).items() if k not in ("out",)},
                "data": str(data),
                "training_images": [p.name for p in files],
                "content_layers": c_layers,
                "style_layers": s_layers,
            },
            "mapping": mapping,
            "per_step": per_step,
            "checkpoints": rows,
            "compile": compile_times,
            "training": training,
            "env": outputs.run_env(),
        },
    )
    out.summary(
        "Johnson et al.: outputs across training, style weight 2,000 vs 1,000 (report Figure 15)",
        [
            f"{args.transformer} transformation network trained on the {len(files)} images of "
            f"`{data}` ({args.image_size} px crops, batch {args.batch_size}, Adam lr "
            f"{args.lr:g}), style {sp.stem} at {args.style_size} px, content {','.join(c_layers)}"
            f", style {','.join(s_layers)}. Test outputs at {args.test_size} px for "
            f"{', '.join(n for n, _ in tests)} (from the training folder: the report used "
            "held-out photos).",
            report.MAPPING_NOTE + f" Measured k = {outputs.fmt(k)}.",
            "## Per checkpoint (means over the test images)\n\n"
            + outputs.md_table(
                per_step,
                [
                    "report_style_weight",
                    "step",
                    "mean_content_loss",
                    "mean_style_loss",
                    "mean_abs_change",
                    "seconds_per_step",
                ],
            ),
            "## Findings\n\n" + "\n".join(findings),
        ],
    )
    print(f"wrote {out.dir}: " + ", ".join(sorted(set(out.written))))
    return {"per_step": per_step}


if __name__ == "__main__":
    main()
