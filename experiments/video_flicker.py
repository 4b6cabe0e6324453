"""python -m experiments.video_flicker [--out DIR] [--smoke]   (about 25 minutes on 2 CPU cores)

--smoke (5 frames at 48 px, 6 + 3 iterations, weights 0 and the default): about 1 minute.
The full runtime is an estimate from the small run in README ("Video"): 16 frames at 128 px,
4 weights.

How much flicker does Ruder et al.'s temporal term remove from ``jaxstyle video --style``, and
what does it cost? Makes a clip (a slow pan across --content, --pan pixels a frame at --size,
--fps frames a second), runs ``jaxstyle video`` on it once per --temporal-weights value (0:
every frame still starts from the previous output warped, without the term) and records the
flicker measure (mean |out_t - warp(out_{t-1})| over pixels where forward and backward flow
agree, 0-255 levels), the content and style losses, and the time of frame 1 (which compiles)
against the later frames (which reuse its programs).

Writes ``clip.mp4`` (the input), ``weight_*.mp4`` and ``weight_*.json`` (each run's video and
``--report``), ``results.csv`` (a row per weight), ``frames.csv`` (a row per frame and weight),
``results.json``, ``strip.png`` (output frames without and with the term, and where each
flickers), ``sheet.png`` (the same under the input frames), ``flicker.png`` (flicker per frame)
and ``summary.md``.
"""

from __future__ import annotations

import json

import numpy as np

from experiments.lib import cli, inputs, outputs

NAME = "video_flicker"


def pan_clip(photo: np.ndarray, size: int, frames: int, pan: int) -> list[np.ndarray]:
    """``frames`` crops of ``photo`` (3:2, ``size`` px wide), each ``pan`` px right of the last.

    The photo is scaled so that the last crop still fits inside it.
    """
    from jaxstyle import images as imlib

    w, h = size, round(size * 2 / 3)
    need_w = w + pan * (frames - 1)
    scale = max(need_w / photo.shape[1], h / photo.shape[0])
    big = imlib.resize(
        photo, max(h, round(photo.shape[0] * scale)), max(need_w, round(photo.shape[1] * scale))
    )
    top = (big.shape[0] - h) // 2
    return [big[top : top + h, t * pan : t * pan + w] for t in range(frames)]


def write_clip(path, frames: list[np.ndarray], fps: float) -> None:
    """The frames as a near-lossless H.264 file (4:4:4, CRF 10)."""
    import imageio_ffmpeg

    from jaxstyle.video import to_uint8

    h, w = frames[0].shape[:2]
    gen = imageio_ffmpeg.write_frames(
        str(path), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv444p", quality=None,
        macro_block_size=1, ffmpeg_log_level="error", output_params=["-crf", "10"],
    )  # fmt: skip
    gen.send(None)
    for f in frames:
        gen.send(to_uint8(f))
    gen.close()


def read_video(path) -> list[np.ndarray]:
    from jaxstyle import video

    return [f.astype(np.float32) / 255 for f in video.read_frames(video.probe(path))]


def flicker_map(frames: list[np.ndarray], t: int) -> np.ndarray:
    """``|out_t - warp(out_{t-1})|`` where the flow is consistent (gray elsewhere), x4."""
    from jaxstyle import video

    flow = video.Flow()
    back = flow(frames[t], frames[t - 1])
    mask = video.consistency(flow(frames[t - 1], frames[t]), back)
    diff = np.abs(frames[t] - video.warp(frames[t - 1], back)).mean(-1, keepdims=True)
    shown = np.clip(diff * 4, 0, 1) * mask[..., None] + 0.5 * (1 - mask[..., None])
    return np.repeat(shown, 3, -1)


def main(argv: list[str] | None = None) -> dict:
    from jaxstyle import video

    ap = cli.parser(__doc__, NAME)
    cli.add_pair_flags(ap)
    ap.add_argument("--size", type=int, default=128, help="the clip's width in pixels")
    ap.add_argument("--frames", type=int, default=16, help="frames in the clip")
    ap.add_argument("--pan", type=int, default=2, help="pixels the view moves a frame")
    ap.add_argument("--fps", type=float, default=12.0, help="the clip's frame rate")
    ap.add_argument("--iterations", type=int, default=video.FIRST_ITERATIONS, help="frame 1")
    ap.add_argument("--iterations-next", type=int, default=video.NEXT_ITERATIONS, help="frames 2..")
    ap.add_argument(
        "--temporal-weights",
        type=cli.csv_list(float),
        default=(0.0, 1e6, video.TEMPORAL_WEIGHT, 1e8),
        help="the weights compared (comma-separated); 0: the warped start alone",
    )
    args = cli.parse(ap, argv)
    cli.smoke(args, ap, size=48, frames=5, iterations=6, iterations_next=3)
    if args.smoke and args.temporal_weights == ap.get_default("temporal_weights"):
        args.temporal_weights = (0.0, video.TEMPORAL_WEIGHT)
    if args.frames < 3 or args.size < 32 or args.pan < 0 or args.fps <= 0:
        cli.fail("--frames must be >= 3, --size >= 32, --pan >= 0 and --fps > 0")
    content = inputs.find_image(args, "content", args.content)
    style = inputs.find_image(args, "style", args.style)

    from jaxstyle import cli as jcli
    from jaxstyle import images as imlib

    out = outputs.Outputs(args.out, NAME, args)
    clip = pan_clip(imlib.load_image(content), args.size, args.frames, args.pan)
    write_clip(out.path("clip.mp4"), clip, args.fps)
    out.written.append("clip.mp4")
    rows, frame_rows, videos = [], [], {}
    for weight in args.temporal_weights:
        stem = f"weight_{weight:g}"
        argv = ["video", str(out.path("clip.mp4")), "-o", str(out.path(f"{stem}.mp4")), "-q"]
        argv += ["--style", str(style), "--iterations", str(args.iterations)]
        argv += ["--iterations-next", str(args.iterations_next), "--temporal-weight", str(weight)]
        argv += ["--report", str(out.path(f"{stem}.json")), "--seed", str(args.seed)]
        if args.weights:
            argv += ["--weights", args.weights]
        if jcli.main(argv) != 0:
            cli.fail(f"jaxstyle {' '.join(argv)} failed")
        out.written += [f"{stem}.mp4", f"{stem}.json"]
        report = json.loads(out.path(f"{stem}.json").read_text())
        s = report["summary"]
        later = report["frames"][1:]
        rows.append(
            {
                "temporal_weight": weight,
                "flicker_mean": s["flicker_mean"],
                "consistent_mean": s["consistent_mean"],
                "content_mean": float(np.mean([r["content"] for r in later])),
                "style_mean": float(np.mean([r["style"] for r in later])),
                "temporal_mean": float(np.mean([r["temporal"] for r in later])),
                "first_frame_seconds": s["first_frame_seconds"],
                "first_frame_compile_seconds": report["frames"][0]["compile_seconds"],
                "later_frame_seconds_mean": s["later_frame_seconds_mean"],
            }
        )
        for r in report["frames"]:
            frame_rows.append({"temporal_weight": weight, **{k: r.get(k) for k in FRAME_COLS}})
        videos[weight] = read_video(out.path(f"{stem}.mp4"))
    out.csv("results.csv", rows)
    out.csv("frames.csv", frame_rows)
    out.json("results.json", {"args": vars(args), "results": rows, "frames": frame_rows})
    series = [
        {
            "label": f"weight {w:g}",
            "x": [r["frame"] + 1 for r in frame_rows if r["temporal_weight"] == w][1:],
            "y": [r["flicker"] for r in frame_rows if r["temporal_weight"] == w][1:],
        }
        for w in args.temporal_weights
    ]
    out.plot("flicker.png", [{"title": "flicker (0-255) by frame", "series": series}])
    # strip.png (for README) shows outputs only; sheet.png adds the input frames, which come
    # from ../shared/images and are not committed.
    shown = [w for w in (0.0, video.TEMPORAL_WEIGHT) if w in videos] or list(videos)[:2]
    picks = sorted({0, args.frames // 2, args.frames - 1})
    strip = []
    for w in shown:
        row = next(r for r in rows if r["temporal_weight"] == w)
        label = f"weight {w:g}" + (" (off)" if w == 0 else "")
        strip.append(
            [(videos[w][t], f"{label}, frame {t + 1}") for t in picks]
            + [(flicker_map(videos[w], picks[-1]), f"|out - warped previous| x4\n"
                f"flicker {row['flicker_mean']:.2f}")]
        )  # fmt: skip
    title = f"{content.stem} x {style.stem}, {args.size} px, {args.pan} px/frame pan"
    out.sheet("strip.png", strip, title)
    inputs_row = [(clip[t], f"input, frame {t + 1}") for t in picks]
    inputs_row.append(
        (flicker_map(clip, picks[-1]), "|in - warped previous| x4\ngray: inconsistent")
    )
    out.sheet("sheet.png", [inputs_row, *strip], title)
    base = rows[0]
    table = outputs.md_table(
        rows,
        ["temporal_weight", "flicker_mean", "content_mean", "style_mean", "temporal_mean"]
        + ["first_frame_seconds", "first_frame_compile_seconds", "later_frame_seconds_mean"],
    )
    speed = (
        f"Frame 1 ({args.iterations} iterations) took {base['first_frame_seconds']:.1f} s, "
        f"{base['first_frame_compile_seconds']:.1f} s of it compiling; later frames "
        f"({args.iterations_next} iterations) {base['later_frame_seconds_mean']:.2f} s each, "
        f"compiling nothing: {base['first_frame_seconds'] / args.iterations:.3f} s against "
        f"{base['later_frame_seconds_mean'] / max(1, args.iterations_next):.3f} s an iteration."
    )
    out.summary(
        "Flicker with and without the temporal term",
        [
            f"{args.frames} frames of a {args.pan} px/frame pan across {content.name} at "
            f"{args.size} px, style {style.name}; flicker = mean |out_t - warp(out_(t-1))| over "
            "consistent pixels (OpenCV DIS flow), 0-255 levels, frames 2...",
            table,
            speed,
        ],
    )
    print(f"wrote {out.dir}")
    return {"rows": rows}


FRAME_COLS = ("frame", "flicker", "consistent", "content", "style", "temporal", "seconds")
FRAME_COLS += ("compile_seconds", "iterations")


if __name__ == "__main__":
    main()
