"""The ``jaxstyle`` command line: the only module that knows about flags.

Errors a user can fix (bad files, bad settings, missing weights) print one ``error:`` line and
exit with status 2; nothing is overwritten or half-written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from jaxstyle.configs import GatysConfig, TrainConfig, add_config_flags, config_from_args

EXIT_USAGE = 2
#: A run that went through but ended badly (a non-finite final loss, restarts used up).
EXIT_FAILED = 1


class UsageError(Exception):
    """A problem with what the user asked for."""


def enable_compile_cache() -> None:
    """Turns on JAX's persistent compilation cache so a second run starts fast."""
    import jax

    from jaxstyle.weights import home

    try:
        jax.config.update("jax_compilation_cache_dir", str(home() / "xla-cache"))
        # Every program, small ones too: a 256 px stylize compiles 57, and at the former
        # 0.5 s threshold a second run compiled 55 of them again.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    except (AttributeError, ValueError):  # an older/newer JAX without these options
        pass


# ---------------------------------------------------------------------------------------------
# stylize and demo.


def _expand_images(paths: Sequence[str]) -> list[Path]:
    from jaxstyle.images import IMAGE_SUFFIXES

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UsageError(f"{p}: folder holds no images")
            out += found
        else:
            out.append(p)
    return out


def _intermediate_name(out: Path, iteration: int) -> Path:
    return out.with_name(f"{out.stem}_{iteration:05d}{out.suffix}")


def check_outputs(outputs: Sequence[Path], inputs: Sequence[str | Path]) -> None:
    """Before any work: no output may be an input, and each must be writable as an image."""
    from jaxstyle import fileio
    from jaxstyle import images as imlib

    fileio.refuse_overwriting_inputs(outputs, inputs)
    for out in outputs:
        imlib.check_output_path(out)
        fileio.check_writable(out)


def _stylize_outputs(outputs: Sequence[Path], cfg: GatysConfig) -> list[Path]:
    """Every file a stylize run may write: the outputs and their intermediate images."""
    names = list(outputs)
    if cfg.save_every > 0:
        total = cfg.iterations * len(cfg.resolved_scales())
        steps = range(cfg.save_every, total + 1, cfg.save_every)
        names += [_intermediate_name(o, i) for o in outputs for i in steps]
    return names


def _check_stylize_paths(
    contents: list[Path], styles: list[Path], outputs: list[Path], cfg: GatysConfig, weights, log
) -> None:
    """No output, intermediate image or log may be an input, and each must be writable."""
    from jaxstyle import fileio

    inputs = [*contents, *styles, *([weights] if weights else []), *cfg.style_masks]
    if cfg.init not in ("content", "noise", "style"):
        inputs.append(cfg.init)  # its header is checked by api.check_stylize
    check_outputs(_stylize_outputs(outputs, cfg), inputs)
    if log is not None:
        fileio.refuse_overwriting_inputs([log], [*inputs, *outputs])
        fileio.check_writable(log)


def _stylize_images(contents, styles, cfg: GatysConfig, preloaded) -> tuple[list, list]:
    """Checks the images from their headers (the API's checks), then decodes each at the
    largest size used."""
    from jaxstyle import api
    from jaxstyle import images as imlib

    if preloaded is None:
        c_shapes = [(p, imlib.image_shape(p)) for p in contents]
        s_shapes = [(p, imlib.image_shape(p)) for p in styles]
    else:
        c_shapes = [(p, a.shape[:2]) for p, a in zip(contents, preloaded[0], strict=True)]
        s_shapes = [(p, a.shape[:2]) for p, a in zip(styles, preloaded[1], strict=True)]
    api.check_stylize(c_shapes, s_shapes, cfg)
    if preloaded is not None:
        return preloaded
    top = max(cfg.resolved_scales())
    style_top = max(16, round(top * cfg.style_scale))
    return (
        [imlib.load_image(p, top) for p in contents],
        [imlib.load_image(p, style_top) for p in styles],
    )


def _report_stylize(result, contents, styles, outputs, log_path, quiet: bool) -> None:
    """Writes the log (atomically), the failures and, unless quiet, a one-line summary."""
    from jaxstyle import fileio

    summary = result.log["summary"]
    if log_path is not None:
        result.log["inputs"] = {
            "content": [str(p) for p in contents],
            "style": [str(p) for p in styles],
        }
        result.log["outputs"] = list(map(str, outputs))
        with fileio.atomic_path(log_path) as tmp:
            tmp.write_text(json.dumps(result.log, indent=1))
    for reason in result.failed:
        print(f"error: {reason}", file=sys.stderr)
    if not quiet:
        print(
            f"wrote {', '.join(map(str, outputs))}: loss {summary['total']:.4g} (content "
            f"{summary['content']:.4g}, style {summary['style']:.4g}, tv {summary['tv']:.4g}), "
            f"{summary['iterations']} iterations in {summary['optimisation_seconds']:.1f} s "
            f"+ {summary['compile_seconds']:.1f} s compiling",
            file=sys.stderr,
        )


def run_stylize(
    contents: list[Path],
    styles: list[Path],
    outputs: list[Path],
    cfg: GatysConfig,
    *,
    weights: str | None,
    log_path: Path | None,
    quiet: bool,
    preloaded: tuple[list, list] | None = None,
) -> dict:
    """Checks everything, loads, stylises, writes outputs (and the log) atomically.

    Every check that can fail (settings, paths, image headers, sizes, memory) runs before the
    weights are loaded or anything is compiled. A run that ended badly (a final loss that is not
    finite, restarts used up) still writes its best iterate and log, prints an ``error:`` line
    per image, and its log's ``summary.failed`` lists them: the caller exits non-zero.
    """
    from jaxstyle import api
    from jaxstyle import images as imlib

    cfg.validate()
    _check_stylize_paths(contents, styles, outputs, cfg, weights, log_path)
    content_imgs, style_imgs = _stylize_images(contents, styles, cfg, preloaded)
    # Transparency: the optimisation sees the content over white; its alpha goes back on
    # every image written (resized to it) where the format keeps it.
    alphas = [None] * len(contents)
    if preloaded is None:
        top = max(cfg.resolved_scales())
        alphas = [imlib.load_alpha(p, top) for p in contents]
        if not quiet:
            _alpha_warning(
                [
                    imlib.ImageFile(p, (0, 0), alpha=a is not None)
                    for p, a in zip(contents, alphas, strict=True)
                ],
                outputs,
            )
    enable_compile_cache()

    def on_save(i: int, iteration: int, image) -> None:
        imlib.save_image(
            _intermediate_name(outputs[i], iteration), imlib.with_alpha(image, alphas[i])
        )

    t0 = time.perf_counter()
    result = api.stylize_images(
        content_imgs, style_imgs, cfg, weights=weights, progress=not quiet, on_save=on_save
    )
    for out, img, alpha in zip(outputs, result.images, alphas, strict=True):
        imlib.save_image(out, imlib.with_alpha(img, alpha))
    result.log["summary"]["wall_seconds"] = time.perf_counter() - t0
    _report_stylize(result, contents, styles, outputs, log_path, quiet)
    return result.log


def cmd_stylize(args: argparse.Namespace) -> int:
    if len(args.images) < 2:
        raise UsageError("give a CONTENT image and at least one STYLE image")
    contents = [Path(args.images[0]), *_expand_images(args.batch or [])]
    styles = _expand_images(args.images[1:])
    out = Path(args.output)
    if len(contents) == 1 and not out.is_dir():
        outputs = [out]
    else:
        if out.suffix and not out.is_dir():
            raise UsageError(f"{out}: with several content images, -o must be a folder")
        outputs = [out / f"{c.stem}.png" for c in contents]
        if len({o.name for o in outputs}) != len(outputs):
            raise UsageError("several content images share a file name; rename them")
    cfg = config_from_args(GatysConfig, args)
    log = run_stylize(
        contents,
        styles,
        outputs,
        cfg,
        weights=args.weights,
        log_path=Path(args.log) if args.log else None,
        quiet=args.quiet,
    )
    return EXIT_FAILED if log["summary"]["failed"] else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from jaxstyle import demo

    content, style, where = demo.demo_images()
    if not args.quiet:
        print(f"demo: content {where}; style drawn by jaxstyle", file=sys.stderr)
    cfg = GatysConfig(
        size=args.size, scales=(args.size // 2, args.size), iterations=args.iterations
    )
    log = run_stylize(
        [Path("<demo content>")],
        [Path("<demo style>")],
        [Path(args.output)],
        cfg,
        weights=args.weights,
        log_path=None,
        quiet=args.quiet,
        preloaded=([content], [style]),
    )
    return EXIT_FAILED if log["summary"]["failed"] else 0


# ---------------------------------------------------------------------------------------------
# train, export, apply.


def cmd_train(args: argparse.Namespace) -> int:
    from jaxstyle import images as imlib
    from jaxstyle import train
    from jaxstyle.weights import load_vgg

    cfg = config_from_args(TrainConfig, args)
    cfg.validate()
    styles = _train_styles(args)
    for style in styles:
        imlib.image_shape(style)  # fail before any work when a style image is bad
    train.prepare_workdir(args.workdir)  # ... or when the workdir cannot be written
    enable_compile_cache()
    vgg = load_vgg("vgg16", "max", args.weights, progress=not args.quiet)
    last = train.train_and_evaluate(
        cfg, args.workdir, styles, vgg, base=args.base, progress=not args.quiet
    )
    if not args.quiet:
        print(f"{args.workdir}: step {last['step']}", file=sys.stderr)
    return 130 if last.get("interrupted") else 0


def _train_styles(args: argparse.Namespace) -> list[str]:
    """The style images a ``train`` run learns: STYLE..., or --finetune-styles with --base."""
    from jaxstyle import models

    if args.finetune_styles:
        if args.styles:
            raise UsageError("give either STYLE images or --finetune-styles (with --base)")
        if not args.base:
            raise UsageError("--finetune-styles needs --base: the trained network to extend")
        kind = models.model_kind(args.base)
        if kind not in ("johnson", "multistyle"):
            raise UsageError(f"{args.base}: --base must be a style network, not an {kind} model")
        return args.finetune_styles
    if args.base:
        raise UsageError("--base is for fine-tuning: give the new styles with --finetune-styles")
    if not args.styles:
        raise UsageError("give the style image(s) to train on")
    if len(set(map(Path, args.styles))) != len(args.styles):
        raise UsageError("a style image is given twice")
    return args.styles


def cmd_export(args: argparse.Namespace) -> int:
    from jaxstyle import export, fileio, models, train

    out = Path(args.output)
    workdir = Path(args.model)
    if args.size is not None and args.format != "tflite":
        raise UsageError(f"--size is for --format tflite ({args.format} takes any size)")
    if args.format != "safetensors" or args.quantize or not workdir.is_dir():
        size = export.parse_size(args.size) if args.size else export.TFLITE_SIZE
        export.export_model(workdir, args.format, out, quantize=args.quantize, size=size)
        print(f"wrote {out} ({args.format})", file=sys.stderr)
        return 0
    fileio.refuse_overwriting_inputs([out], [workdir])
    fileio.check_writable(out)
    if not workdir.is_dir():
        raise UsageError(f"{workdir}: not a training workdir (export writes a workdir's network)")
    kind = models.workdir_kind(workdir)
    if kind == "adain":
        from jaxstyle import train_adain

        train_adain.export(workdir, out)
        print(f"wrote {out}", file=sys.stderr)
        return 0
    params, ncfg, saved = train.restore_params(workdir)
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    meta = {
        "steps": saved["step"],
        "source": str(workdir.resolve()),
        "training": json.dumps({k: saved[k] for k in fields if k in saved}),
    }
    if ncfg.num_styles > 1:
        meta["styles"] = json.dumps(saved["styles"])
    else:
        meta["style"] = saved.get("style", "")
    models.save_model(out, params, ncfg, meta)
    print(f"wrote {out} ({kind}, step {saved['step']})", file=sys.stderr)
    return 0


def _apply_outputs(args: argparse.Namespace, inputs: list[Path]) -> list[Path]:
    out = Path(args.output)
    if len(inputs) == 1 and not Path(args.inputs[0]).is_dir() and not out.is_dir():
        return [out]
    if out.suffix and not out.is_dir():
        raise UsageError(f"{out}: with several inputs, -o must be a folder")
    outputs = [out / f"{p.stem}.png" for p in inputs]
    if len({o.name for o in outputs}) != len(outputs):
        raise UsageError("several inputs share a file name; give them separately")
    return outputs


def _parse_numbers(flag: str, text: str | None) -> list[float] | None:
    """A comma-separated flag's numbers (their ranges are checked by api.check_apply)."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag}: not comma-separated numbers: {text!r}") from None


#: apply's flags, as the API's checks name them in messages (keys: api.KEYWORD_NAMES's).
APPLY_FLAGS = {
    "style_index": "--style-index",
    "style_mix": "--style-mix",
    "styles": "--style",
    "style_weights": "--style-weights",
    "alpha": "--alpha",
    "style_size": "--style-size",
    "preserve_colors": "--preserve-colors",
    "batch_size": "--batch-size",
    "bucket": "--bucket",
    "smaller": "--size",
    "tile": "--tile",
    "max_memory": "--max-memory",
    "mask": "--mask",
    "mask_style_index": "--mask-style-index",
    "mask_style": "--mask-style",
}


def _net_config(model: str, kind: str):
    """A model file's architecture from its metadata alone (a workdir's from its checkpoint),
    so --tile is checked against the network's own receptive field before any work."""
    from safetensors import safe_open

    from jaxstyle import api
    from jaxstyle.nets.transformer_net import NetConfig

    if kind == "adain":
        return None
    if Path(model).is_dir():
        return api.load_model(model).config
    with safe_open(str(model), framework="numpy") as f:
        return NetConfig.from_meta(dict(f.metadata() or {}))


def _alpha_warning(files, outputs) -> None:
    """One stderr line when inputs with transparency go to outputs that cannot keep it."""
    from jaxstyle import images as imlib

    lost = [
        str(o) for f, o in zip(files, outputs, strict=True) if f.alpha and not imlib.keeps_alpha(o)
    ]
    if lost:
        more = f" (and {len(lost) - 1} more)" if len(lost) > 1 else ""
        print(
            f"warning: {lost[0]}{more}: the input's transparency is dropped (written over "
            f"white); use .png, .webp or .tif to keep it",
            file=sys.stderr,
        )


def _style_options(args: argparse.Namespace, styles: list) -> dict[str, object]:
    """The feed-forward style flags ``apply`` and ``video --model`` share, as
    :func:`jaxstyle.api.check_apply` keywords."""
    return {
        "style_index": args.style_index,
        "style_mix": _parse_numbers("--style-mix", args.style_mix),
        "styles": styles or None,
        "style_weights": _parse_numbers("--style-weights", args.style_weights),
        "alpha": args.alpha,
        "style_size": args.style_size,
        "preserve_colors": args.preserve_colors,
    }


def cmd_apply(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from jaxstyle import api, models
    from jaxstyle import images as imlib

    if args.size < 0:
        raise UsageError(f"--size must be >= 0, got {args.size}")
    styles = list(map(Path, args.style or []))
    extra = [Path(p) for p in (args.mask, args.mask_style) if p]
    inputs = _expand_images(args.inputs)
    outputs = _apply_outputs(args, inputs)
    check_outputs(outputs, [*inputs, args.model, *styles, *extra])
    # Headers only: every input is checked before any work, decoded one batch at a time.
    files = [imlib.ImageFile.open(p, args.size or None) for p in inputs]
    kind = models.model_kind(args.model)  # metadata only
    # The API's checks, with flags' names in the messages, before the model is loaded.
    request = api.check_apply(
        kind,
        args.model,
        files,
        **_style_options(args, styles),
        batch_size=args.batch_size,
        bucket=args.bucket,
        tile=args.tile,
        max_memory=args.max_memory,
        mask=args.mask,
        mask_style_index=args.mask_style_index,
        mask_style=args.mask_style,
        config=_net_config(args.model, kind),
        names=APPLY_FLAGS,
    )
    model = api.load_model(args.model)
    model.check(request)  # style rows against the network's; tiles against its receptive field
    if not args.quiet:
        _alpha_warning(files, outputs)
    bar = tqdm(total=len(files), unit="img", disable=args.quiet, desc="apply")

    def done(i: int, image) -> None:
        imlib.save_image(outputs[i], image)
        bar.update(1)

    model.run(request, on_done=done, progress=not args.quiet)
    bar.close()
    return 0


# ---------------------------------------------------------------------------------------------
# weights.


def cmd_weights(args: argparse.Namespace) -> int:
    from jaxstyle import weights

    if args.action == "fetch":
        for name in args.names:
            path = weights.fetch(
                name, progress=not args.quiet, force=args.force, keep_source=args.keep_source
            )
            print(weights.verify(name))
            print(f"  cached at {path}")
    elif args.action == "list":
        rows = weights.list_cached()
        if not rows:
            print(f"no weights cached under {weights.home() / 'weights'}")
        for r in rows:
            size = r["bytes"] / 2**20
            print(
                f"{r['name']:8s} {size:7.1f} MiB  {r.get('arch', '?')}  "
                f"convention={r.get('convention', '?')}  source={r.get('source', '?')}  "
                f"{r['path']}"
            )
    else:
        unknown = sorted(set(args.names) - {"vgg16", "vgg19"})
        if unknown:
            raise UsageError(f"unknown network {unknown[0]!r}; choose vgg16 or vgg19")
        names = args.names or [r["name"] for r in weights.list_cached()]
        if not names:
            print(f"no weights cached under {weights.home() / 'weights'}")
        for name in names:
            print(weights.verify(name))
    return 0


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxstyle",
        description="Neural style transfer in JAX: Gatys et al. 2015 and Johnson et al. 2016.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "stylize",
        help="iterative style transfer (Gatys et al.)",
        description="Optimise an image so its VGG features match CONTENT and its Gram matrices "
        "match the STYLE images. Loss: content_weight*content + style_weight*style + "
        "tv_weight*tv (formulas in README).",
    )
    p.add_argument("images", nargs="+", metavar="CONTENT STYLE [STYLE ...]")
    p.add_argument("-o", "--output", required=True, help="output image, or folder with --batch")
    p.add_argument(
        "--batch",
        nargs="+",
        metavar="CONTENT",
        help="more content images or folders, optimised together; -o is then a folder",
    )
    p.add_argument("--weights", help="VGG weights file (any format weights_convert reads)")
    p.add_argument("--log", help="write a JSON log (per-iteration losses and a summary)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_config_flags(p, GatysConfig)
    p.set_defaults(func=cmd_stylize)

    p = sub.add_parser("demo", help="stylise a built-in image; needs no arguments")
    p.add_argument("-o", "--output", default="demo.png")
    p.add_argument("--size", type=int, default=256, help="long side (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=100, help="per scale (default: %(default)s)")
    p.add_argument("--weights", help="VGG16 weights file")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "train",
        help="train a feed-forward network for one or several styles (Johnson et al.; "
        "Dumoulin et al.)",
        description="Train a transformation network on content images with VGG16 perceptual "
        "losses: one style, or several in one network with a (gamma, beta) row per style. "
        "Rerunning the same command in the same --workdir resumes.",
    )
    p.add_argument(
        "styles",
        nargs="*",
        metavar="STYLE",
        help="the style image; several train one multi-style network (conditional instance norm)",
    )
    p.add_argument("--workdir", required=True, help="checkpoints, metrics, previews")
    p.add_argument(
        "--finetune-styles",
        nargs="+",
        metavar="NEW",
        help="add these styles to the network --base, training only their (gamma, beta) rows",
    )
    p.add_argument(
        "--base", metavar="MODEL", help="the trained network (workdir or file) to extend"
    )
    p.add_argument("--weights", help="VGG16 weights file")
    p.add_argument("-q", "--quiet", action="store_true")
    add_config_flags(p, TrainConfig)
    p.set_defaults(func=cmd_train)

    _add_train_adain_parser(sub)
    _add_feed_forward_parsers(sub)
    _add_video_parser(sub)
    _add_weights_parser(sub)
    _add_serve_parser(sub)
    return parser


def _add_feed_forward_parsers(sub) -> None:
    """``export`` and ``apply``: the commands that use a trained network."""
    p = sub.add_parser(
        "export", help="write a network as a model file or a program for another runtime"
    )
    p.add_argument("model", metavar="MODEL", help="a training workdir or a model file")
    p.add_argument("-o", "--output", required=True, help="file (a folder for savedmodel)")
    p.add_argument(
        "--format",
        default="safetensors",
        metavar="F",
        help="safetensors (parameters, for jaxstyle; a model file is copied), stablehlo "
        "(jax.export, any size, cpu+cuda), savedmodel (TensorFlow, any size) or tflite "
        "(fixed size) (default: %(default)s)",
    )
    p.add_argument("--quantize", metavar="float16", help="tflite only: float16 weights")
    p.add_argument(
        "--size", metavar="HxW", help="tflite only: its fixed image height and width (256x256)"
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("apply", help="stylise images with a trained network")
    p.add_argument("model", metavar="MODEL", help="a workdir or an exported .safetensors")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="images or folders")
    p.add_argument("-o", "--output", required=True, help="output file, or folder")
    p.add_argument("--size", type=int, default=0, help="resize inputs to this long side")
    p.add_argument("--batch-size", type=int, default=8, help="(default: %(default)s)")
    p.add_argument(
        "--tile",
        type=int,
        metavar="N",
        help="run each image in N-pixel tiles (the same output: whole-image statistics, exact "
        "context); 0: never; default: only images over --max-memory",
    )
    p.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="memory an image may use, e.g. 2GiB or 800MiB (a number alone: MiB); larger "
        "images run in tiles (default: 2GiB on CPU, less on a smaller machine; a GPU's own)",
    )
    p.add_argument(
        "--mask",
        metavar="MASK",
        help="grayscale image, resized to each input: white keeps the stylised output, black "
        "the original (or --mask-style-index / --mask-style), gray blends",
    )
    p.add_argument(
        "--mask-style-index",
        type=int,
        metavar="K",
        help="multi-style networks: the mask's black shows style K instead of the original",
    )
    p.add_argument(
        "--mask-style",
        metavar="STYLE",
        help="AdaIN models: the mask's black shows this style instead of the original",
    )
    p.add_argument(
        "--bucket",
        type=int,
        default=64,
        help="pad sizes up to a multiple of this, one compile per bucket; the padding does not "
        "change any output (default: %(default)s)",
    )
    p.add_argument(
        "--preserve-colors",
        default="none",
        choices=("none", "luminance", "histogram"),
        help="keep the content's colours: luminance (YIQ chrominance of the content), "
        "histogram (output recoloured to the content's colour statistics; AdaIN recolours the "
        "style images instead) (default: %(default)s)",
    )
    multi = p.add_argument_group("multi-style networks")
    multi.add_argument("--style-index", type=int, metavar="K", help="the style to apply (0-based)")
    multi.add_argument(
        "--style-mix",
        metavar="W0,W1,...",
        help="blend the styles' (gamma, beta) rows: one weight >= 0 per style, normalised to sum 1",
    )
    adain = p.add_argument_group("AdaIN models (arbitrary style)")
    adain.add_argument("--style", nargs="+", metavar="STYLE", help="style image(s)")
    adain.add_argument(
        "--style-weights",
        metavar="W1,W2,...",
        help="one weight >= 0 per style, normalised to sum 1 (default: equal)",
    )
    adain.add_argument(
        "--alpha", type=float, help="strength in [0, 1]: features alpha*t + (1-alpha)*content (1)"
    )
    adain.add_argument(
        "--style-size",
        type=int,
        metavar="N",
        help="resize each style image's long side to this before encoding; 0 keeps its own "
        "size (512)",
    )
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_apply)


def _add_weights_parser(sub) -> None:
    p = sub.add_parser("weights", help="fetch, list and verify VGG weights")
    wsub = p.add_subparsers(dest="action", required=True)
    f = wsub.add_parser("fetch", help="download and verify weights into the cache")
    f.add_argument("names", nargs="+", choices=("vgg16", "vgg19"))
    f.add_argument("--force", action="store_true", help="fetch even if cached")
    f.add_argument("--keep-source", action="store_true", help="also keep the original file")
    f.add_argument("-q", "--quiet", action="store_true")
    wsub.add_parser("list", help="what is cached: sizes and sources")
    v = wsub.add_parser("verify", help="re-read cached weights and check every tensor")
    # No argparse choices here: with nargs="*" argparse checks the empty default against them
    # and refuses a bare `weights verify` (Python <= 3.12); names are checked in cmd_weights.
    v.add_argument("names", nargs="*", metavar="{vgg16,vgg19}", help="default: every cached file")
    p.set_defaults(func=cmd_weights)


# ---------------------------------------------------------------------------------------------
# serve.


def cmd_serve(args: argparse.Namespace) -> int:
    """Checks the flags, binds the port (a port in use is a one-line error), then serves."""
    import contextlib
    import ipaddress
    import math
    import socket

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535 (0: any free port), got {args.port}")
    if not (math.isfinite(args.max_upload_mb) and args.max_upload_mb > 0):
        raise UsageError(f"--max-upload-mb must be a positive number, got {args.max_upload_mb}")
    if args.models is not None and not Path(args.models).is_dir():
        raise UsageError(f"{args.models}: no such folder (--models: a folder of model files)")
    if args.weights is not None and not Path(args.weights).is_file():
        raise UsageError(f"{args.weights}: no such file (--weights)")
    try:
        from jaxstyle import serve
    except ImportError as e:
        raise UsageError(
            f"jaxstyle serve needs the web server packages ({e.name} is missing): pip install "
            f'"jaxstyle[serve]"'
        ) from None
    try:
        family = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
    except OSError as e:  # socket.gaierror included
        raise UsageError(f"{args.host}:{args.port}: cannot listen ({e.strerror or e})") from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"jaxstyle serve: http://{shown}:{port}/ (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        print(
            f"warning: {host} is reachable from other machines; the server has no passwords",
            file=sys.stderr,
        )
    enable_compile_cache()
    # uvicorn re-raises Ctrl-C after its graceful shutdown: for a server, the normal end.
    with contextlib.suppress(KeyboardInterrupt):
        serve.serve(
            sock,
            args.models,
            weights=args.weights,
            max_upload_bytes=int(args.max_upload_mb * 2**20),
            quiet=args.quiet,
        )
    print("jaxstyle serve: stopped", file=sys.stderr)
    return 0


def _add_serve_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="a local web page: stylise with live progress, or apply trained models",
        description="Serve a web page and its HTTP API (README, 'Local web page'): Gatys runs "
        "as queued jobs with live progress, models under --models answer at once.",
    )
    p.add_argument("--port", type=int, default=8000, help="(default: %(default)s; 0: any free)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, this machine only)",
    )
    p.add_argument("--models", metavar="DIR", help="model files and training workdirs to offer")
    p.add_argument("--weights", help="VGG weights file for stylize jobs (default: the cache)")
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=50.0,
        help="largest request body, all its files together, in MiB (default: %(default)s)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no request log")
    p.set_defaults(func=cmd_serve)


# ---------------------------------------------------------------------------------------------
# train-adain.


def cmd_train_adain(args: argparse.Namespace) -> int:
    from jaxstyle import input_pipeline, train, train_adain
    from jaxstyle.configs import AdainTrainConfig
    from jaxstyle.weights import load_vgg

    cfg = config_from_args(AdainTrainConfig, args)
    cfg.validate()
    for flag, source in (("--data", cfg.data), ("--styles", cfg.styles)):
        try:  # a missing or empty folder fails before any work
            input_pipeline.check_source(source)
        except input_pipeline.DataError as e:
            raise UsageError(f"{flag}: {e}") from None
    train.prepare_workdir(args.workdir)  # ... and so does an unwritable workdir
    enable_compile_cache()
    vgg = load_vgg(cfg.encoder, "max", args.weights, progress=not args.quiet)
    last = train_adain.train_and_evaluate(cfg, args.workdir, vgg, progress=not args.quiet)
    if not args.quiet:
        print(f"{args.workdir}: step {last['step']}", file=sys.stderr)
    return 130 if last.get("interrupted") else 0


def _add_train_adain_parser(sub) -> None:
    from jaxstyle.configs import AdainTrainConfig

    p = sub.add_parser(
        "train-adain",
        help="train an AdaIN decoder for arbitrary styles (Huang & Belongie)",
        description="Train the decoder of an AdaIN network (frozen VGG encoder up to relu4_1) on "
        "content images (--data) and style images (--styles folder:PATH). Rerunning the same "
        "command in the same --workdir resumes.",
    )
    p.add_argument("--workdir", required=True, help="checkpoints, metrics, previews")
    p.add_argument(
        "--weights",
        help="weights of the --encoder VGG, any format weights_convert reads (default: the "
        "cached ones, fetched on first use)",
    )
    p.add_argument("-q", "--quiet", action="store_true")
    add_config_flags(p, AdainTrainConfig)
    p.set_defaults(func=cmd_train_adain)


# ---------------------------------------------------------------------------------------------
# video.

#: Flags only a --model run takes (default None: not given).
_VIDEO_FEED_FORWARD = ("batch_size", "style_index", "style_mix", "style_weights", "alpha")
_VIDEO_FEED_FORWARD += ("style_size",)
#: Flags only a Gatys run takes besides GatysConfig's (default None: not given).
_VIDEO_GATYS = ("weights", "iterations_next", "temporal_weight")
#: GatysConfig fields without a video flag: one size for every frame (--size, which serves
#: --model too), no intermediate images, no tiles or masks per frame; --preserve-colors is
#: video's own flag (both kinds of run take it).
_VIDEO_SKIP = ("size", "scales", "save_every", "tile", "tile_halo", "tile_iterations")
_VIDEO_SKIP += ("style_masks", "preserve_colors")


def _check_video_flags(args: argparse.Namespace) -> None:
    """Each flag belongs to one kind of run: --model (feed-forward) or --style alone (Gatys)."""
    from jaxstyle import video

    if args.model is None and not args.style:
        raise UsageError(
            "give --model MODEL (a feed-forward network) or --style STYLE (Gatys' method with "
            "Ruder et al.'s temporal term)"
        )
    if args.size < 0:
        raise UsageError(f"--size must be >= 0 (0: the video's own size), got {args.size}")
    if not 0 <= args.crf <= 51:
        raise UsageError(f"--crf must be in 0..51 (x264's quality scale), got {args.crf}")
    if args.model is None:
        given = [n for n in _VIDEO_FEED_FORWARD if getattr(args, n) is not None]
        if given:
            raise UsageError(f"{APPLY_FLAGS[given[0]]} is for --model runs")
        return
    defaults = {"iterations": video.FIRST_ITERATIONS}
    given = [n for n in _VIDEO_GATYS if getattr(args, n) is not None]
    given += [
        f.name
        for f in dataclasses.fields(GatysConfig)
        if f.name not in _VIDEO_SKIP
        and hasattr(args, f.name)
        and getattr(args, f.name) != defaults.get(f.name, f.default)
    ]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise UsageError(f"{flag} is for Gatys runs (--style without --model)")


def _video_gatys_setup(args, info, styles: list[Path], work: tuple[int, int]):
    """Checks a Gatys video run before any work; returns ``load()``, which loads the network
    and the styles and returns the frame runner."""
    import math

    from jaxstyle import api, video
    from jaxstyle import images as imlib

    cfg = config_from_args(GatysConfig, args)
    cfg = dataclasses.replace(cfg, size=max(work))
    cfg.validate()
    nxt = video.NEXT_ITERATIONS if args.iterations_next is None else args.iterations_next
    weight = video.TEMPORAL_WEIGHT if args.temporal_weight is None else args.temporal_weight
    if nxt < 0:
        raise UsageError(f"--iterations-next must be >= 0, got {nxt}")
    if not (math.isfinite(weight) and weight >= 0):
        raise UsageError(f"--temporal-weight must be a finite number >= 0, got {weight}")
    shapes = [(str(s), imlib.image_shape(s)) for s in styles]
    api.check_stylize([(str(info.path), work)], shapes, cfg)
    settings = {
        "mode": "gatys",
        "styles": list(map(str, styles)),
        "iterations_first": cfg.iterations,
        "iterations_next": nxt,
        "temporal_weight": weight,
        "work_size": [work[1], work[0]],
        "config": dataclasses.asdict(cfg),
    }

    def load():
        from jaxstyle.weights import load_vgg

        enable_compile_cache()
        net = load_vgg(cfg.net, cfg.pooling, args.weights, progress=not args.quiet)
        style_long = max(16, round(cfg.size * cfg.style_scale))
        style_imgs = [imlib.load_image(s, style_long) for s in styles]

        def run(frames, write, on_frame, on_iteration):
            return video.stylize_video(
                frames, write, style_imgs, net, cfg, work_shape=work, out_shape=info.shape,
                next_iterations=nxt, temporal_weight=weight, on_frame=on_frame,
                on_iteration=on_iteration,
            )  # fmt: skip

        return run

    return settings, load


def _video_feed_forward_setup(args, info, styles: list[Path], work: tuple[int, int]):
    """Checks a feed-forward video run before any work (the API's checks, with video's flag
    names); returns ``load()``, which loads the model and returns the frame runner."""
    import numpy as np

    from jaxstyle import api, models, video

    kind = models.model_kind(args.model)  # metadata only
    batch = 8 if args.batch_size is None else args.batch_size
    placeholder = np.zeros((*work, 3), np.uint8)  # the frames' shape, for the memory check
    request = api.check_apply(
        kind,
        args.model,
        [placeholder] * max(1, min(batch, 64)),
        **_style_options(args, styles),
        batch_size=batch,
        bucket=4,  # every frame has one size: pad only to the network's multiple of 4
        names=APPLY_FLAGS,  # the same flags as apply's
    )
    settings = {"mode": "feed-forward", "model": str(args.model), "kind": kind}
    settings.update(batch_size=batch, work_size=[work[1], work[0]])

    def load():
        from jaxstyle import inference
        from jaxstyle.images import ImageFile

        enable_compile_cache()
        model = api.load_model(args.model)
        model.check(request)  # a multi-style network's --style-index/--style-mix against its rows
        loaded = [  # AdaIN's style files decoded once, not per batch
            inference.load_style(s.path, request.style_size) if isinstance(s, ImageFile) else s
            for s in request.styles
        ]
        ready = dataclasses.replace(request, styles=loaded)

        def run(frames, write, on_frame, on_iteration):
            return video.feed_forward_video(
                frames, write, model, ready, work_shape=work, out_shape=info.shape,
                measure=args.report is not None, on_frame=on_frame,
            )  # fmt: skip

        return run

    return settings, load


def cmd_video(args: argparse.Namespace) -> int:
    import itertools

    from tqdm.auto import tqdm

    from jaxstyle import fileio, video
    from jaxstyle import images as imlib

    video.require()
    _check_video_flags(args)
    info = video.probe(args.input)
    out = Path(args.output)
    styles = list(map(Path, args.style or []))
    inputs = [info.path, *styles, *[p for p in (args.model, args.weights) if p]]
    video.check_output(out, inputs)
    report_path = Path(args.report) if args.report else None
    if report_path is not None:
        fileio.refuse_overwriting_inputs([report_path], [*inputs, out])
        fileio.check_writable(report_path)
    work = info.shape if not args.size else imlib.size_for_long_side(info.shape, args.size)
    setup = _video_gatys_setup if args.model is None else _video_feed_forward_setup
    settings, load = setup(args, info, styles, work)
    frames = video.read_frames(info)
    first = next(frames, None)  # an empty or undecodable stream fails before any loading
    if first is None:
        raise video.VideoError(f"{info.path}: holds no video frames")
    bar = tqdm(total=info.frames, unit="frame", desc="video", disable=args.quiet, file=sys.stderr)

    shown: dict[str, str] = {}  # the bar's postfix: the running frame, and the last flicker

    def on_frame(row: dict) -> None:
        if row.get("flicker") is not None:
            shown["flicker"] = f"{row['flicker']:.2f}"
        bar.set_postfix(shown, refresh=False)
        bar.update(1)

    def on_iteration(t: int, iteration: int, losses: dict) -> None:
        shown.update(frame=str(t + 1), it=str(iteration), loss=f"{losses.get('total', 0):.4g}")
        bar.set_postfix(shown)

    # Loading inside: a failed load leaves no output and no temporary file either.
    with video.Writer(out, info, crf=args.crf) as writer:
        run = load()
        log = run(itertools.chain([first], frames), writer.write, on_frame, on_iteration)
    bar.close()
    settings.update(crf=args.crf, preserve_colors=args.preserve_colors, audio=writer.audio_note)
    record = video.report(log, info, out, settings)
    if report_path is not None:
        with fileio.atomic_path(report_path) as tmp:
            tmp.write_text(json.dumps(record, indent=1))
    failed = [f"frame {r['frame']}: {m}" for r in log.rows for m in r.get("failed", [])]
    for reason in failed:
        print(f"error: {reason}", file=sys.stderr)
    if not args.quiet:
        s = record["summary"]
        flick = s["flicker_mean"]
        what = "" if flick is None else f"; flicker {flick:.2f} (0-255, consistent pixels)"
        later = s["later_frame_seconds_mean"]
        times = f"frame 1 {s['first_frame_seconds']:.1f} s" + (
            "" if later is None else f", then {later:.2f} s a frame"
        )
        print(
            f"wrote {out}: {writer.frames} frames, {info.width}x{info.height} at "
            f"{float(info.fps):.6g} fps, audio {writer.audio_note}{what}; {times}",
            file=sys.stderr,
        )
    return EXIT_FAILED if failed else 0


def _add_video_parser(sub) -> None:
    from jaxstyle import video

    p = sub.add_parser(
        "video",
        help="stylise a video: a feed-forward model, or Gatys' method with Ruder et al.'s "
        "temporal term",
        description="Stylise every frame of a video, streamed, keeping its frame rate, frame "
        "count, size and audio. --model: a trained network, frames in batches. --style alone: "
        "Gatys' method per frame, each frame starting from the previous output warped by "
        "optical flow (OpenCV DIS) with a temporal loss on pixels where forward and backward "
        "flow agree (Ruder, Dosovitskiy & Brox 2016).",
    )
    p.add_argument("input", metavar="INPUT", help="a video file (any format ffmpeg reads)")
    p.add_argument("-o", "--output", required=True, help="the output: .mp4, .mkv or .mov")
    p.add_argument("--model", help="a feed-forward model: a workdir or a model file")
    p.add_argument(
        "--style",
        nargs="+",
        metavar="STYLE",
        help="without --model: the style image(s) of Gatys' method; with an AdaIN --model: its "
        "style image(s)",
    )
    p.add_argument(
        "--size",
        type=int,
        default=0,
        help="stylise frames at this long side; the output keeps the input's size (default: 0, "
        "the input's size)",
    )
    p.add_argument(
        "--preserve-colors",
        default="none",
        choices=("none", "luminance", "histogram"),
        help="keep the frames' colours, as stylize and apply (default: %(default)s)",
    )
    p.add_argument(
        "--crf",
        type=int,
        default=video.DEFAULT_CRF,
        help="H.264 quality, 0 (lossless) to 51 (default: %(default)s)",
    )
    p.add_argument("--report", help="write a JSON record: per-frame flicker, losses and times")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ff = p.add_argument_group("feed-forward models (--model)")
    ff.add_argument("--batch-size", type=int, help="frames per batch (default: 8)")
    ff.add_argument("--style-index", type=int, metavar="K", help="multi-style: the style")
    ff.add_argument("--style-mix", metavar="W0,W1,...", help="multi-style: a blend of styles")
    ff.add_argument("--style-weights", metavar="W1,W2,...", help="AdaIN: one weight per style")
    ff.add_argument("--alpha", type=float, help="AdaIN: strength in [0, 1] (default: 1)")
    ff.add_argument("--style-size", type=int, metavar="N", help="AdaIN: style long side (512)")
    g = p.add_argument_group("Gatys' method (--style without --model)")
    g.add_argument(
        "--iterations-next",
        type=int,
        help=f"iterations of every frame after the first, which starts from the previous "
        f"output warped (default: {video.NEXT_ITERATIONS})",
    )
    g.add_argument(
        "--temporal-weight",
        type=float,
        help=f"weight of the temporal term mean(c * (x - warped previous)^2) over consistent "
        f"pixels c; 0 disables it (default: {video.TEMPORAL_WEIGHT:g})",
    )
    g.add_argument("--weights", help="VGG weights file (any format weights_convert reads)")
    add_config_flags(
        g, GatysConfig, skip=_VIDEO_SKIP, defaults={"iterations": video.FIRST_ITERATIONS}
    )
    p.set_defaults(func=cmd_video)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the command itself, not a call from Python
        from jaxstyle import hostmem

        hostmem.relaunch_with_huge_pages()  # returns only where it does not apply
    from jaxstyle.fileio import OutputError
    from jaxstyle.images import ImageError, configure_pillow
    from jaxstyle.input_pipeline import DataError
    from jaxstyle.models import ModelError
    from jaxstyle.train import TrainError
    from jaxstyle.video import VideoError
    from jaxstyle.weights import WeightsError

    args = build_parser().parse_args(argv)
    configure_pillow()
    try:
        return args.func(args)
    except (
        UsageError,
        OutputError,
        ImageError,
        WeightsError,
        ModelError,
        TrainError,
        DataError,
        VideoError,
        ValueError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # disk full, permissions, a path that vanished mid-run
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; no output was written for unfinished work", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
