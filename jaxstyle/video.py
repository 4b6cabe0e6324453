"""Video: every frame of a clip stylised, streamed, with the frame rate, frame count, frame
size and audio of the input kept.

Two ways to stylise a frame:

* a feed-forward model (``jaxstyle apply``'s networks), frames in fixed-size batches so one
  compiled program serves the whole clip (:func:`feed_forward_video`);
* Gatys' optimisation with the temporal constraint of Ruder, Dosovitskiy & Brox (2016,
  "Artistic style transfer for videos") (:func:`stylize_video`): frame ``t`` starts from the
  output of frame ``t-1`` warped by optical flow, and its loss gains
  ``temporal_weight * mean(c * (x - warped)^2)`` where ``c`` is 1 on pixels whose forward and
  backward flows agree and 0 elsewhere (disocclusions, motion boundaries).

Frames are decoded and encoded by the ffmpeg binary that ``imageio-ffmpeg`` ships, one frame
at a time (a clip never sits in memory), into H.264 (CRF ``crf``) in a temporary file beside
the output; the input's audio streams are then copied into it (re-encoded to AAC only when the
container cannot hold them) and the file is renamed into place. Optical flow is OpenCV's DIS
(Kroeger et al. 2016, preset MEDIUM) on grayscale frames.

The flicker measure is the mean of ``|out_t - warp(out_{t-1})|`` over the pixels where the
flow is consistent, in 0-255 levels, averaged over frames 2.. (:func:`flicker`).

``imageio-ffmpeg`` and ``opencv-python-headless`` are the ``video`` extra; they are imported
only when a video is processed (:func:`require`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from jaxstyle import fileio
from jaxstyle import images as imlib

#: Containers the output may be: they hold H.264 and the usual audio codecs.
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")
#: H.264 quality of the output (x264's constant rate factor: 0 lossless, 18 visually lossless,
#: 23 x264's default).
DEFAULT_CRF = 18
#: Ruder et al.'s forward-backward check: inconsistent where
#: |w~ + w^|^2 > FB_SCALE * (|w~|^2 + |w^|^2) + FB_OFFSET (flows in pixels).
FB_SCALE, FB_OFFSET = 0.01, 0.5
#: ... and motion boundaries where |grad u^|^2 + |grad v^|^2 > MB_SCALE * |w^|^2 + MB_OFFSET.
MB_SCALE, MB_OFFSET = 0.01, 0.002
#: The aux names the temporal objective reads from ``content_t``.
AUX_WARPED, AUX_CONSISTENCY, AUX_WEIGHT = "warped_prev", "consistency", "temporal_weight"
#: Gatys defaults of ``jaxstyle video`` (see README, "Video"): the first frame from the content,
#: later frames from the previous output warped, which needs far fewer iterations.
FIRST_ITERATIONS = 200
NEXT_ITERATIONS = 50
#: Weight of the temporal term. Ruder et al. weight it 200 against content 1 on pixels in 0-255;
#: here pixels are in [0, 1] (the term is 255^2 times smaller) and the content loss is the same
#: mean over relu4_2 features, so theirs is 200 * 255^2 = 1.3e7 here, rounded to 1e7. Measured
#: (README, "Video"): it removes 40% of the flicker for +7% style loss at 30 iterations a frame;
#: 1e8 removes 79% for +36% (later frames keep more of the warped previous one).
TEMPORAL_WEIGHT = 1e7

PIP_HINT = 'pip install "jaxstyle[video]"'


class VideoError(Exception):
    """A video that cannot be read or written, or a missing dependency; names the file."""


def require() -> tuple[Any, Any]:
    """``(imageio_ffmpeg, cv2)``, or a VideoError saying how to install them."""
    # imageio-ffmpeg starts ffmpeg with preexec_fn=os.setpgrp (so that Ctrl-C does not reach
    # it), which makes Python fork and run the at-fork hooks: once JAX runs, its hook warns of a
    # deadlock. Without it ffmpeg is spawned directly; Ctrl-C then stops ffmpeg too, which is
    # what a run interrupted here wants (its partial output is removed anyway).
    os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")
    try:
        import cv2
        import imageio_ffmpeg
    except ImportError as e:
        raise VideoError(f"video needs {e.name}: {PIP_HINT}") from None
    return imageio_ffmpeg, cv2


# ---------------------------------------------------------------------------------------------
# Reading and writing.


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a video's header says: frame size, exact frame rate, estimated frame count, audio."""

    path: Path
    width: int
    height: int
    fps: Fraction
    frames: int  # estimated from duration x rate (the header's own count is not read)
    audio: str | None  # the first audio stream's codec, None without audio

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width


def exact_fps(fps: float) -> Fraction:
    """The frame rate ffmpeg prints with two decimals, as the exact fraction it stands for.

    ffmpeg prints 30000/1001 as ``29.97`` and 24000/1001 as ``23.98``; a rational rate of that
    NTSC family is taken when it rounds to the printed value, else the printed value itself
    (``12.5`` -> 25/2). Written at the printed 23.98, a 24000/1001 film would run 0.017% fast
    (a frame every 4 minutes) and its timestamps would no longer be the source's.
    """
    if fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"not a frame rate: {fps}")
    ntsc = Fraction(round(fps * 1.001) * 1000, 1001)
    if fps != round(fps) and round(float(ntsc), 2) == round(fps, 2):
        return ntsc
    return Fraction(fps).limit_denominator(1000)


def _ffmpeg_reason(error: BaseException) -> str:
    """The last line of ffmpeg's complaint (imageio-ffmpeg puts its stderr in the message)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    reason = lines[-1] if lines else type(error).__name__
    for prefix in ("Error opening input files: ", "Error opening input file "):
        reason = reason.removeprefix(prefix)
    return reason


def probe(path: str | Path) -> VideoInfo:
    """Reads a video's header (ffmpeg decodes nothing yet).

    Raises:
        VideoError: a missing file, a folder, or a file ffmpeg cannot read as a video.
    """
    iio, _ = require()
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if not path.is_file():
        raise VideoError(f"{path}: not a file")
    gen = iio.read_frames(str(path))
    try:
        meta = next(gen)
    except (OSError, RuntimeError, StopIteration, IndexError, ValueError) as e:
        text = str(e)
        if "Stream #" in text and " Video: " not in text:  # e.g. an audio file
            raise VideoError(f"{path}: holds no video stream") from None
        raise VideoError(f"{path}: not a readable video ({_ffmpeg_reason(e)})") from None
    finally:
        gen.close()
    w, h = meta["size"]
    if not meta.get("fps"):
        raise VideoError(f"{path}: its header gives no frame rate")
    fps = exact_fps(meta["fps"])
    if min(w, h) < imlib.MIN_SIDE:
        raise VideoError(f"{path}: {w}x{h} frames are too small (each side >= {imlib.MIN_SIDE})")
    frames = max(1, round(meta.get("duration", 0) * fps))
    return VideoInfo(path, int(w), int(h), fps, frames, meta.get("audio_codec"))


def read_frames(info: VideoInfo) -> Iterator[np.ndarray]:
    """The frames one at a time, uint8 H x W x 3 RGB (the rotation ffmpeg applies included)."""
    iio, _ = require()
    gen = iio.read_frames(str(info.path), pix_fmt="rgb24")
    try:
        next(gen)
        for raw in gen:
            yield np.frombuffer(raw, np.uint8).reshape(info.height, info.width, 3)
    except (OSError, RuntimeError) as e:
        raise VideoError(f"{info.path}: decoding failed ({_ffmpeg_reason(e)})") from None
    finally:
        gen.close()


def check_output(output: str | Path, inputs: Sequence[str | Path]) -> None:
    """Before any work: a video container suffix, not an input, writable."""
    output = Path(output)
    if output.suffix.lower() not in VIDEO_SUFFIXES:
        raise VideoError(
            f"{output}: the output must be a {', '.join(VIDEO_SUFFIXES)} file (H.264 video)"
        )
    fileio.refuse_overwriting_inputs([output], inputs)
    fileio.check_writable(output)


class Writer:
    """Frames in, an H.264 file out (a context manager): encoded into a temporary file beside
    ``output``; on leaving the ``with`` block the source's audio is copied in and the file
    renamed onto ``output``. Leaving it by an exception leaves ``output`` as it was and removes
    the temporary files. ``audio_note`` then says what happened to the audio.

    Odd frame sizes are kept: they are encoded as 4:4:4 (yuv444p), which H.264 allows at any
    size, instead of 4:2:0, which needs even sides (and which ffmpeg would reach by resizing).
    """

    def __init__(self, output: Path, info: VideoInfo, crf: int = DEFAULT_CRF):
        self.output, self.info, self.crf = Path(output), info, crf
        self.frames = 0
        self._stack = contextlib.ExitStack()
        self._gen = None

    def __enter__(self) -> Writer:
        iio, _ = require()
        self._final = self._stack.enter_context(
            fileio.atomic_path(self.output, suffix=f".part{self.output.suffix}")
        )
        self._video = self._stack.enter_context(_temp_beside(self.output))
        even = self.info.width % 2 == 0 and self.info.height % 2 == 0
        self._gen = iio.write_frames(
            str(self._video),
            (self.info.width, self.info.height),
            fps=self.info.fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p" if even else "yuv444p",
            quality=None,
            macro_block_size=1,  # never resize
            ffmpeg_log_level="error",
            output_params=["-crf", str(self.crf)],
        )
        self._gen.send(None)
        return self

    def write(self, frame: np.ndarray) -> None:
        """Appends one frame: H x W x 3, uint8 or float in [0, 1], at the input's size."""
        if frame.shape != (self.info.height, self.info.width, 3):
            raise ValueError(f"frame of shape {frame.shape}; expected {self.info.shape + (3,)}")
        if frame.dtype != np.uint8:
            frame = to_uint8(frame)
        try:
            self._gen.send(np.ascontiguousarray(frame))
        except (OSError, RuntimeError) as e:
            raise VideoError(f"{self.output}: encoding failed ({_ffmpeg_reason(e)})") from None
        self.frames += 1

    def __exit__(self, kind, value, tb) -> bool:
        gen, self._gen = self._gen, None
        if kind is not None:  # the run failed: stop ffmpeg, remove the temporary files
            with contextlib.suppress(Exception):
                gen.close()
            self._stack.__exit__(kind, value, tb)
            return False
        try:
            try:
                gen.close()  # ffmpeg finishes the file
            except (OSError, RuntimeError) as e:
                raise VideoError(f"{self.output}: encoding failed ({_ffmpeg_reason(e)})") from None
            self.audio_note = _mux(self._video, self.info, self._final)
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise
        self._stack.__exit__(None, None, None)  # renames the finished file onto the output
        return False


@contextlib.contextmanager
def _temp_beside(output: Path) -> Iterator[Path]:
    """A temporary file in the output's folder (same suffix, for ffmpeg), always removed."""
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        dir=output.parent, prefix=f".{output.name}.", suffix=f".video{output.suffix}"
    )
    os.close(fd)
    try:
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            Path(name).unlink()


def _mux(video: Path, info: VideoInfo, dest: Path) -> str:
    """``video``'s stream and ``info``'s audio streams into ``dest``; returns what happened to
    the audio (for the report)."""
    import shutil

    iio, _ = require()
    if info.audio is None:
        shutil.copyfile(video, dest)
        return "none in the input"
    base = [iio.get_ffmpeg_exe(), "-y", "-v", "error", "-i", str(video), "-i", str(info.path)]
    base += ["-map", "0:v:0", "-map", "1:a?", "-c:v", "copy"]
    for audio, note in ((["-c:a", "copy"], "copied"), (["-c:a", "aac"], "re-encoded to AAC")):
        proc = subprocess.run([*base, *audio, str(dest)], capture_output=True, text=True)
        if proc.returncode == 0:
            return f"{info.audio}, {note}"
    reason = (proc.stderr.strip().splitlines() or ["ffmpeg failed"])[-1]
    raise VideoError(f"{info.path}: its audio could not be put into {dest.suffix} ({reason})")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as uint8 (rounded)."""
    return np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Optical flow, warping, consistency, flicker.


class Flow:
    """OpenCV's DIS optical flow (preset MEDIUM) between RGB frames, one estimator reused."""

    def __init__(self, preset: str = "medium"):
        _, cv2 = require()
        presets = {
            "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
            "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
        }
        self.preset = preset
        self._dis = cv2.DISOpticalFlow_create(presets[preset])
        self._cv2 = cv2

    def gray(self, image: np.ndarray) -> np.ndarray:
        """An RGB image (uint8, or float in [0, 1]) as the uint8 grayscale DIS reads."""
        u8 = image if image.dtype == np.uint8 else to_uint8(image)
        return self._cv2.cvtColor(np.ascontiguousarray(u8), self._cv2.COLOR_RGB2GRAY)

    def __call__(self, frm: np.ndarray, to: np.ndarray) -> np.ndarray:
        """The flow ``w`` (H, W, 2; x then y, in pixels) with ``frm(p) ~ to(p + w(p))``."""
        return self._dis.calc(self.gray(frm), self.gray(to), None)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` sampled at ``p + flow(p)`` (bilinear; positions outside repeat the border).

    With ``flow`` the backward flow of frame ``t`` (from ``t`` to ``t-1``) this carries an image
    of frame ``t-1`` onto frame ``t``.
    """
    _, cv2 = require()
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + flow[..., 0], gy + flow[..., 1]
    out = cv2.remap(
        np.ascontiguousarray(image, np.float32), mx, my, cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )  # fmt: skip
    return out.reshape(image.shape)


def consistency(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Ruder et al.'s per-pixel weights ``c`` of frame ``t``: 1 where the flow can be trusted.

    ``backward`` is the flow from frame ``t`` to ``t-1`` (``w^``), ``forward`` from ``t-1`` to
    ``t`` (``w``). With ``w~(p) = w(p + w^(p))`` (the forward flow carried to frame ``t``), a
    pixel is 0 where the two disagree,
    ``|w~ + w^|^2 > 0.01 (|w~|^2 + |w^|^2) + 0.5`` (a disocclusion), on a motion boundary,
    ``|grad u^|^2 + |grad v^|^2 > 0.01 |w^|^2 + 0.002``, or where ``p + w^(p)`` falls outside
    the frame (Ruder et al. section 3.1, plus that last rule for the frame's border).

    Returns:
        (H, W) float32 of 0s and 1s.
    """
    h, w = backward.shape[:2]
    carried = warp(forward, backward)
    disagree = (
        np.sum((carried + backward) ** 2, -1)
        > FB_SCALE * (np.sum(carried**2, -1) + np.sum(backward**2, -1)) + FB_OFFSET
    )
    du = np.gradient(backward[..., 0])
    dv = np.gradient(backward[..., 1])
    grad2 = du[0] ** 2 + du[1] ** 2 + dv[0] ** 2 + dv[1] ** 2
    boundary = grad2 > MB_SCALE * np.sum(backward**2, -1) + MB_OFFSET
    gx, gy = np.meshgrid(np.arange(w), np.arange(h))
    tx, ty = gx + backward[..., 0], gy + backward[..., 1]
    outside = (tx < 0) | (tx > w - 1) | (ty < 0) | (ty > h - 1)
    return (~(disagree | boundary | outside)).astype(np.float32)


def flicker(
    current: np.ndarray, previous: np.ndarray, backward: np.ndarray, mask: np.ndarray
) -> float:
    """Mean ``|current - warp(previous)|`` over the pixels where ``mask`` is 1 (and the three
    channels), in 0-255 levels; NaN when no pixel is consistent.

    ``current`` and ``previous`` are outputs of frames ``t`` and ``t-1`` (float in [0, 1]),
    ``backward`` the flow from ``t`` to ``t-1`` and ``mask`` its :func:`consistency`.
    """
    if not mask.any():
        return float("nan")
    diff = np.abs(np.asarray(current, np.float32) - warp(previous, backward))
    return float(diff[mask > 0].mean() * 255.0)


# ---------------------------------------------------------------------------------------------
# The temporal objective (Gatys + Ruder).


def temporal_objective(x, net, content_t, style_g, weights, content_layers, style_layers):
    """:func:`jaxstyle.gatys.objective.objective` plus Ruder et al.'s short-term temporal term,
    ``temporal_weight * mean(c * (x - warped_prev)^2)`` (the mean over all H x W x 3 values, as
    their ``1/D`` sum), reported as the ``temporal`` term.

    ``warped_prev`` (h, w, 3), ``consistency`` (h, w, 1) and ``temporal_weight`` (h, w, 1, a
    constant map) arrive in ``content_t`` (the ``aux`` of :func:`jaxstyle.gatys.stylize`): all
    are program arguments, so no frame and no weight compiles anew. A first frame passes an
    all-zero ``consistency`` (no term) and shares the programs.
    """
    import jax.numpy as jnp

    from jaxstyle.gatys.objective import objective

    total, terms = objective(x, net, content_t, style_g, weights, content_layers, style_layers)
    c = content_t[AUX_CONSISTENCY]
    temporal = jnp.mean(c * (x - content_t[AUX_WARPED]) ** 2)
    total = total + jnp.mean(content_t[AUX_WEIGHT]) * temporal
    return total, {**terms, "temporal": temporal, "total": total}


# ---------------------------------------------------------------------------------------------
# The two drivers.


@dataclasses.dataclass
class FrameLog:
    """What :func:`stylize_video` and :func:`feed_forward_video` record per frame."""

    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Mean flicker over frames 2.. and the time of frame 1 against the rest."""
        flick = [r["flicker"] for r in self.rows if r.get("flicker") is not None]
        secs = [r["seconds"] for r in self.rows]
        out: dict[str, Any] = {
            "frames": len(self.rows),
            "flicker_mean": float(np.mean(flick)) if flick else None,
            "seconds": float(sum(secs)),
            "first_frame_seconds": secs[0] if secs else None,
            "later_frame_seconds_mean": float(np.mean(secs[1:])) if len(secs) > 1 else None,
        }
        cons = [r["consistent"] for r in self.rows if r.get("consistent") is not None]
        if cons:
            out["consistent_mean"] = float(np.mean(cons))
        return out


def _finite(value: float) -> float | None:
    """``value``, or None for NaN (a frame without consistent pixels; JSON has no NaN)."""
    return None if math.isnan(value) else value


def _at_size(frame: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A uint8 frame as float32 in [0, 1] at ``shape`` (H, W)."""
    image = frame.astype(np.float32) / 255.0
    return imlib.resize(image, *shape) if image.shape[:2] != tuple(shape) else image


def stylize_video(
    frames: Iterator[np.ndarray],
    write: Callable[[np.ndarray], None],
    styles: Sequence[np.ndarray],
    net: Any,
    cfg: Any,
    *,
    work_shape: tuple[int, int],
    out_shape: tuple[int, int],
    next_iterations: int = NEXT_ITERATIONS,
    temporal_weight: float = TEMPORAL_WEIGHT,
    flow: Flow | None = None,
    on_frame: Callable[[dict[str, Any]], None] | None = None,
    on_iteration: Callable[[int, int, dict[str, float]], None] | None = None,
) -> FrameLog:
    """Gatys' method frame by frame with Ruder et al.'s temporal constraint.

    Frame 1 runs ``cfg.iterations`` iterations from ``cfg.init``; frame ``t > 1`` runs
    ``next_iterations`` from the output of frame ``t-1`` warped by the backward flow, with the
    temporal term on the consistent pixels (``temporal_weight`` 0: the warped start alone).
    All frames have one shape, so the compiled programs of frame 1 serve every later frame.

    Args:
        frames: uint8 H x W x 3 frames (streamed).
        write: receives each output, float32 at ``out_shape``, in order.
        styles: float32 style images, already at their run size.
        net: the loss network; cfg: a single-scale :class:`~jaxstyle.configs.GatysConfig`.
        work_shape: (H, W) the frames are stylised at (``cfg.size`` on the long side).
        out_shape: (H, W) of the written frames.
        on_frame: called with each frame's log row (frame, seconds, losses, flicker...).
        on_iteration: called as ``on_iteration(frame, iteration, losses)`` every
            ``cfg.progress_every`` iterations (progress).

    Returns:
        The :class:`FrameLog` (flicker: :func:`flicker` of each frame against the previous).
    """
    from jaxstyle import gatys

    flow = flow or Flow()
    log = FrameLog()
    prev_in = prev_out = None
    for t, frame in enumerate(frames):
        t0 = time.perf_counter()
        content = _at_size(frame, work_shape)
        h, w = work_shape
        if prev_out is None:
            warped, mask, backward, init = content, np.zeros((h, w), np.float32), None, None
            run_cfg = cfg
        else:
            backward = flow(content, prev_in)
            mask = consistency(flow(prev_in, content), backward)
            warped = warp(prev_out, backward)
            init = [warped]
            run_cfg = dataclasses.replace(cfg, iterations=next_iterations)
        aux = {
            AUX_WARPED: warped,
            AUX_CONSISTENCY: mask[..., None],
            AUX_WEIGHT: np.full((h, w, 1), temporal_weight, np.float32),
        }
        callback = None
        if on_iteration is not None:

            def callback(_i, iteration, losses, _image, t=t):
                on_iteration(t, iteration, losses)

        result = gatys.stylize(
            [content], list(styles), net, run_cfg, progress=False, objective=temporal_objective,
            aux=[aux], init_images=init, callback=callback,
            callback_every=cfg.progress_every,
        )  # fmt: skip
        out = result.images[0]
        summary = result.log["summary"]
        final = summary["per_image"][0]
        row: dict[str, Any] = {
            "frame": t,
            "iterations": run_cfg.iterations,
            "total": final.get("total"),
            "content": final.get("content"),
            "style": final.get("style"),
            "temporal": final.get("temporal"),
            "restarts": summary["restarts"],
            "failed": list(result.failed),
            "compile_seconds": summary["compile_seconds"],
        }
        if backward is not None:
            row["flicker"] = _finite(flicker(out, prev_out, backward, mask))
            row["consistent"] = float(mask.mean())
        write(imlib.resize(out, *out_shape) if out.shape[:2] != tuple(out_shape) else out)
        row["seconds"] = time.perf_counter() - t0
        log.rows.append(row)
        if on_frame is not None:
            on_frame(row)
        prev_in, prev_out = content, out
    return log


def feed_forward_video(
    frames: Iterator[np.ndarray],
    write: Callable[[np.ndarray], None],
    model: Any,
    request: Any,
    *,
    work_shape: tuple[int, int],
    out_shape: tuple[int, int],
    measure: bool = False,
    flow: Flow | None = None,
    on_frame: Callable[[dict[str, Any]], None] | None = None,
) -> FrameLog:
    """A feed-forward model over the frames, ``request.batch_size`` at a time.

    The last batch is filled up with copies of its last frame (dropped again), so every batch
    has one shape and one compiled program serves the clip.

    Args:
        frames: uint8 H x W x 3 frames (streamed).
        write: receives each output, float32 at ``out_shape``, in order.
        model: a :class:`jaxstyle.api.Model`; request: its checked
            :class:`jaxstyle.api.ApplyRequest` (options; its images are replaced per batch).
        work_shape: (H, W) the frames are stylised at; out_shape: (H, W) written.
        measure: also compute each frame's :func:`flicker` (optical flow per frame pair).
        on_frame: called with each frame's log row.
    """
    flow = flow or (Flow() if measure else None)
    log = FrameLog()
    state: dict[str, Any] = {"prev_in": None, "prev_out": None, "t": 0}
    batch_size = max(1, request.batch_size)

    def run(batch: list[np.ndarray]) -> None:
        t0 = time.perf_counter()
        padded = batch + [batch[-1]] * (batch_size - len(batch))
        outs = model.run(dataclasses.replace(request, images=padded, form="list"))
        seconds = (time.perf_counter() - t0) / len(batch)
        for content, out in zip(batch, outs[: len(batch)], strict=True):
            row: dict[str, Any] = {"frame": state["t"], "seconds": seconds}
            if measure and state["prev_out"] is not None:
                backward = flow(content, state["prev_in"])
                mask = consistency(flow(state["prev_in"], content), backward)
                row["flicker"] = _finite(flicker(out, state["prev_out"], backward, mask))
                row["consistent"] = float(mask.mean())
            write(imlib.resize(out, *out_shape) if out.shape[:2] != tuple(out_shape) else out)
            log.rows.append(row)
            if on_frame is not None:
                on_frame(row)
            state.update(prev_in=content, prev_out=out, t=state["t"] + 1)

    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(_at_size(frame, work_shape))
        if len(batch) == batch_size:
            run(batch)
            batch = []
    if batch:
        run(batch)
    return log


def report(
    log: FrameLog, info: VideoInfo, output: Path, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """The run's record: input, output, settings, per-frame rows and the summary."""
    return {
        "input": str(info.path),
        "output": str(output),
        "fps": str(info.fps),
        "size": [info.width, info.height],
        "flow": "OpenCV DIS (preset medium), grayscale frames",
        "settings": dict(settings),
        "summary": log.summary(),
        "frames": log.rows,
    }
