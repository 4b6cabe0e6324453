"""``jaxstyle serve``: a local web page for style transfer, and the small HTTP API under it.

The page (``jaxstyle/web/index.html``, plain HTML and JavaScript, no build step) and scripts use
the same endpoints:

=======================================  ========================================================
``GET  /``                               the page
``GET  /api/models``                     the models under ``--models``: name, kind, style names
``GET  /api/options``                    stylize's options with their defaults (GatysConfig)
``POST /api/stylize``                    multipart ``content``, ``style`` (one or more) and any
                                         option by its keyword name -> ``{"id": ...}`` (202)
``GET  /api/jobs/{id}``                  ``{"state", "iteration", "iterations", "loss", ...}``
``GET  /api/jobs/{id}/events``           the same as server-sent events, one per change
``GET  /api/jobs/{id}/image``            the current image as PNG (``?download=1``: attachment)
``POST /api/jobs/{id}/stop``             stops the job (or drops it from the queue)
``POST /api/apply``                      multipart ``model`` name, ``image`` (and ``style`` for
                                         AdaIN, options) -> the stylised image as PNG
``GET  /api/demo/{content|style}``       the built-in demo images (``jaxstyle demo``'s), as PNG
=======================================  ========================================================

Why it is built this way:

* One worker thread runs ``stylize`` jobs in the order they came (a Gatys run takes the whole
  machine; two at once would each take twice as long and twice the memory). Job states:
  ``queued``, ``running``, ``done``, ``stopped``, ``failed`` (with ``error``). ``apply``
  requests are answered at once, not queued behind a long job (one forward pass is short);
  they run one at a time among themselves.
* Stop: the run's progress callback sees the flag and ends the run by raising; the last image
  it reported stays downloadable.
* Uploads: a request body over the limit is refused (413) from its ``Content-Length``, or as
  soon as the streamed bytes pass the limit, before anything is decoded; files are then
  decoded by :mod:`jaxstyle.images` (the CLI's guards: pixel limit from the header, formats,
  EXIF orientation) and checked by the API's own checks (:func:`jaxstyle.api.check_stylize`,
  :func:`jaxstyle.api.check_apply`), so a bad request is a 400 with the CLI's message, before
  any work.
* Options are :class:`~jaxstyle.configs.GatysConfig`'s fields by name (the CLI's flags in
  snake case, the same defaults), converted from text as the flags are; ``init`` takes no PATH
  and ``save_every`` is refused, since neither a server file read nor files written on the
  server's disk belong to a web request.

The web framework (Starlette, served by uvicorn) is imported only here, and this module only
by ``jaxstyle serve``: ``import jaxstyle`` and the other commands do not need the ``serve``
extra.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import math
import queue
import re
import secrets
import tempfile
import threading
import time
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import python_multipart  # noqa: F401 - Starlette parses uploads with it: fail here, not per request
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from jaxstyle import api
from jaxstyle import images as imlib
from jaxstyle.configs import GatysConfig, config_from_kwargs

#: The page, shipped inside the package (``[tool.setuptools.package-data]``).
PAGE = Path(__file__).with_name("web") / "index.html"
#: Default limit on one request's body (all its files together), in bytes.
MAX_UPLOAD_BYTES = 50 * 2**20
#: States after which a job changes no more.
FINISHED = ("done", "stopped", "failed")
#: Finished jobs kept (with their images) for status and download; older ones are forgotten.
KEEP_FINISHED = 50
#: Progress reports per scale at most (a callback ends a compiled chunk; see api.stylize).
REPORTS_PER_SCALE = 100
#: Options the server does not take from a request, and why.
REFUSED = {
    "save_every": "the server writes no intermediate files; GET /api/jobs/{id}/image gives the "
    "current image",
    "style_masks": "they name files on the server's disk; use jaxstyle stylize --style-masks",
}
#: ``POST /api/apply``'s options (besides ``model``, ``image`` and ``style`` files): their types.
APPLY_OPTIONS: Mapping[str, Any] = {
    "size": int,
    "style_index": int,
    "style_mix": list,
    "style_weights": list,
    "alpha": float,
    "style_size": int,
    "preserve_colors": str,
}
#: How :func:`jaxstyle.api.check_apply` names options in the server's messages: as form fields.
APPLY_NAMES = {**api.KEYWORD_NAMES, "smaller": "a smaller size (the size field)"}


class RequestError(Exception):
    """A request the server refuses; ``status`` is the HTTP status, the message says why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


# ---------------------------------------------------------------------------------------------
# Uploads.


class _BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is refused with 413 before the app
    parses it (from ``Content-Length``, or while a chunked body streams in)."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    def _message(self, size: int | None) -> str:
        shown = "" if size is None else f" of {size / 2**20:.3g} MiB"
        return (
            f"upload{shown} is over this server's limit of {self.limit / 2**20:.3g} MiB a "
            f"request (jaxstyle serve --max-upload-mb)"
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            response = _error(self._message(int(length)), 413)
            return await response(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, self._message(None))
            return message

        return await self.app(scope, limited, send)


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


async def _save_upload(upload: UploadFile, field: str, folder: Path, k: int) -> tuple[Path, str]:
    """Writes an uploaded file into ``folder``; returns its path and how messages name it."""
    name = Path(upload.filename or field).name
    shown = f"{field} ({name})" if upload.filename else field
    suffix = Path(_SAFE_NAME.sub("_", name)).suffix[:10]
    path = folder / f"{field}-{k}{suffix}"
    with path.open("wb") as f:
        while chunk := await upload.read(1 << 20):
            f.write(chunk)
    return path, shown


def _named(e: Exception, names: Mapping[Path, str]) -> str:
    """An error message with the server's temporary file names replaced by the upload's."""
    message = str(e)
    for path, shown in names.items():
        message = message.replace(str(path), shown)
    return message


@dataclasses.dataclass
class _Form:
    """A parsed multipart request: text fields, and the uploaded files saved in ``folder``."""

    fields: dict[str, str]
    files: dict[str, list[Path]]
    names: dict[Path, str]  # temporary path -> how messages name the upload

    def one_file(self, field: str) -> Path:
        files = self.files.get(field, [])
        if len(files) != 1:
            got = "none" if not files else f"{len(files)}"
            raise RequestError(
                f"{field}: give one image file (multipart field {field!r}), got {got}"
            )
        return files[0]


async def _read_form(request: Request, folder: Path, file_fields: Sequence[str]) -> _Form:
    """Parses a multipart request; files only in ``file_fields``, each text field at most once."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise RequestError("expected a multipart/form-data request (files and fields)", 415)
    fields: dict[str, str] = {}
    files: dict[str, list[Path]] = {}
    names: dict[Path, str] = {}
    async with request.form(max_files=64, max_fields=128) as form:
        for k, (key, value) in enumerate(form.multi_items()):
            if isinstance(value, UploadFile):
                if key not in file_fields:
                    raise RequestError(
                        f"{key}: not a file field here (files: {', '.join(file_fields)})"
                    )
                path, shown = await _save_upload(value, key, folder, k)
                files.setdefault(key, []).append(path)
                names[path] = shown
            elif key in file_fields:
                raise RequestError(f"{key}: expected an uploaded file, got a text field")
            elif key in fields:
                raise RequestError(f"{key}: given more than once")
            elif value.strip():  # a blank field of an HTML form means "the default"
                fields[key] = value.strip()
    return _Form(fields, files, names)


def _header(path: Path, form: _Form, long_side: int | None = None) -> imlib.ImageFile:
    """The upload's header read with the CLI's guards (pixel limit, format)."""
    try:
        return imlib.ImageFile.open(path, long_side)
    except imlib.ImageError as e:
        raise RequestError(_named(e, form.names)) from None


def _decode(path: Path, form: _Form, long_side: int | None) -> np.ndarray:
    try:
        return imlib.load_image(path, long_side)
    except imlib.ImageError as e:
        raise RequestError(_named(e, form.names)) from None


def _convert(name: str, kind: Any, text: str) -> Any:
    """A text field as a number or a list of numbers; RequestError naming the field if not."""
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is list:
            return [float(v) for v in text.split(",")]
    except ValueError:
        want = {int: "an integer", float: "a number", list: "comma-separated numbers"}[kind]
        raise RequestError(f"{name}: expected {want}, got {text!r}") from None
    return text


def stylize_config(fields: Mapping[str, str]) -> GatysConfig:
    """The settings of a ``POST /api/stylize`` from its text fields, named and converted as
    ``jaxstyle stylize``'s flags (a field left out keeps the flag's default).

    Raises:
        RequestError: an unknown field (the valid ones listed), a value of the wrong type or
            out of range (the config's own message), or an option the server refuses.
    """
    hints = typing.get_type_hints(GatysConfig)
    options: dict[str, Any] = {}
    for name, text in fields.items():
        if name in REFUSED:
            raise RequestError(f"{name}: not taken by the server ({REFUSED[name]})")
        hint = hints.get(name)
        options[name] = _convert(name, hint, text) if hint in (int, float) else text
    try:
        cfg = config_from_kwargs(GatysConfig, options, also=("content", "style"))
        cfg.validate()
    except (TypeError, ValueError) as e:
        raise RequestError(str(e)) from None
    if cfg.init not in ("content", "noise", "style"):
        raise RequestError(
            f"init: the server takes content, noise or style, not a path ({cfg.init!r})"
        )
    return cfg


def png_bytes(image: np.ndarray, compress_level: int = 1) -> bytes:
    """An H x W x 3 float image in [0, 1] as PNG bytes.

    Level 1 for ``apply`` answers: the demo photo at 512 px took 23 ms for 292 KB, against
    93 ms for 272 KB at level 6 (2 busy CPU cores); a job's image is encoded once per change at
    level 6, since it is kept and downloaded.
    """
    u8 = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8, mode="RGB").save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Jobs.


class _Stopped(Exception):
    """Raised by a job's progress callback to end its run when the job was asked to stop."""


@dataclasses.dataclass(eq=False)
class Job:
    """One ``stylize`` request: its inputs until it runs, then its progress and latest image.

    Fields change only under ``lock``; ``version`` counts changes (events are sent per change).
    """

    id: str
    cfg: GatysConfig
    content: np.ndarray | None
    styles: list[np.ndarray] | None
    iterations: int
    state: str = "queued"
    iteration: int = 0
    loss: float | None = None
    history: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    error: str | None = None
    image: np.ndarray | None = None
    created: float = dataclasses.field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    version: int = 0
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    _png: tuple[int, bytes] | None = None

    def update(self, **changes: Any) -> None:
        with self.lock:
            for k, v in changes.items():
                setattr(self, k, v)
            self.version += 1

    def status(self, position: int | None = None, since: int | None = None) -> dict[str, Any]:
        """The job as JSON: ``history`` holds the ``[iteration, loss]`` points from index
        ``since`` on (all when ``None``)."""
        with self.lock:
            out = {
                "id": self.id,
                "state": self.state,
                "iteration": self.iteration,
                "iterations": self.iterations,
                "loss": self.loss,
                "error": self.error,
                "has_image": self.image is not None,
                "position": position,
                "elapsed": None
                if self.started is None
                else round((self.finished or time.time()) - self.started, 3),
                "history": [list(p) for p in self.history[since or 0 :]],
                "version": self.version,
            }
        return out

    def png(self) -> bytes | None:
        """The latest image as PNG, encoded once per change."""
        with self.lock:
            image, version, cached = self.image, self.version, self._png
        if image is None:
            return None
        if cached is not None and cached[0] == version:
            return cached[1]
        data = png_bytes(image, compress_level=6)  # kept and downloaded: worth compressing
        with self.lock:
            self._png = (version, data)
        return data


class Jobs:
    """The queue of ``stylize`` jobs and the one worker thread that runs them in order."""

    def __init__(self, weights: str | None = None):
        self.weights = weights
        self.jobs: dict[str, Job] = {}
        self.pending: queue.Queue[Job | None] = queue.Queue()
        self.order: list[str] = []  # ids of queued jobs, oldest first
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._work, name="jaxstyle-jobs", daemon=True)
            self.thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stops every job and the worker thread."""
        with self.lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.stop.set()
        self.pending.put(None)
        if self.thread is not None:
            self.thread.join(timeout)
            self.thread = None

    def submit(self, cfg: GatysConfig, content: np.ndarray, styles: list[np.ndarray]) -> Job:
        total = cfg.iterations * len(cfg.resolved_scales())
        job = Job(secrets.token_hex(8), cfg, content, styles, total)
        with self.lock:
            self.jobs[job.id] = job
            self.order.append(job.id)
            self._forget_old()
        self.pending.put(job)
        return job

    def get(self, job_id: str) -> Job:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise RequestError(f"no job {job_id!r} (finished jobs are kept: the last "
                               f"{KEEP_FINISHED})", 404)  # fmt: skip
        return job

    def position(self, job: Job) -> int | None:
        """0 for the next job to run, 1 for the one after...; ``None`` unless queued."""
        with self.lock:
            return self.order.index(job.id) if job.id in self.order else None

    def status(self, job: Job, since: int | None = None) -> dict[str, Any]:
        return job.status(self.position(job), since)

    def stop(self, job: Job) -> None:
        job.stop.set()
        with self.lock:
            queued = job.id in self.order
            if queued:
                self.order.remove(job.id)
        if queued:
            job.update(state="stopped", finished=time.time(), content=None, styles=None)

    def _forget_old(self) -> None:
        done = [j for j in self.jobs.values() if j.state in FINISHED]
        for job in sorted(done, key=lambda j: j.created)[: max(0, len(done) - KEEP_FINISHED)]:
            del self.jobs[job.id]

    def _work(self) -> None:
        while (job := self.pending.get()) is not None:
            with self.lock:
                if job.id not in self.order:  # stopped while queued
                    continue
                self.order.remove(job.id)
            self.run(job)

    def run(self, job: Job) -> None:
        """Runs one job to its end; every outcome is a state, never an exception."""
        job.update(state="running", started=time.time())
        every = max(1, job.cfg.iterations // REPORTS_PER_SCALE)

        def report(_index: int, iteration: int, losses: dict, image: np.ndarray) -> None:
            total = float(losses.get("total", math.nan))
            with job.lock:
                job.iteration, job.image = iteration, image
                job.loss = total if math.isfinite(total) else None
                if math.isfinite(total):
                    job.history.append((iteration, total))
                job.version += 1
            if job.stop.is_set():
                raise _Stopped

        end: dict[str, Any] = {}
        try:
            if job.stop.is_set():
                raise _Stopped
            result = api.stylize_images(
                [job.content],
                job.styles,
                job.cfg,
                weights=self.weights,
                callback=report,
                callback_every=every,
            )
        except _Stopped:
            end = {"state": "stopped"}
        except Exception as e:  # noqa: BLE001 - a job's failure is its state, the server goes on
            end = {"state": "failed", "error": str(e) or type(e).__name__}
        else:  # a run that ended badly (non-finite loss) keeps its best iterate, and says why
            end = {
                "image": result.images[0],
                "state": "failed" if result.failed else "done",
                "error": "; ".join(result.failed) or None,
            }
        finally:  # one change: whoever sees the final state sees all of it
            job.update(**end, finished=time.time(), content=None, styles=None)
            with self.lock:
                self._forget_old()


# ---------------------------------------------------------------------------------------------
# Models.


def _describe(path: Path) -> dict[str, Any]:
    """Name, kind and style names of a model file or workdir from its metadata alone.

    Raises:
        jaxstyle.models.ModelError: not a model jaxstyle can load.
    """
    from jaxstyle import models

    kind = models.model_kind(path)
    styles: list[str] = []
    if path.is_dir():
        saved = json.loads((path / "config.json").read_text())
        if kind == "multistyle":
            styles = models.style_names(saved)
        elif saved.get("style"):
            styles = [Path(saved["style"]).name]
    else:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
        if kind == "multistyle":
            styles = models.style_names(meta)
        elif meta.get("style"):
            styles = [Path(meta["style"]).name]
    return {"name": path.name, "kind": kind, "styles": styles}


class Models:
    """The models under one folder: listed from their metadata, each loaded on first use and
    kept."""

    def __init__(self, folder: str | Path | None):
        self.folder = None if folder is None else Path(folder)
        self.loaded: dict[str, api.Model] = {}
        self.lock = threading.Lock()  # one apply at a time; loads happen once
        self.listing: dict[str, dict[str, Any]] = {}
        self.skipped: dict[str, str] = {}
        self.scan()

    def scan(self) -> None:
        """Reads the folder: model files (``*.safetensors``) and training workdirs."""
        from jaxstyle.models import ModelError

        if self.folder is None:
            return
        listing, skipped = {}, {}
        for path in sorted(self.folder.iterdir()):
            if not (path.is_dir() or path.suffix == ".safetensors"):
                continue
            try:
                listing[path.name] = _describe(path)
            except (ModelError, OSError, ValueError, KeyError) as e:
                skipped[path.name] = str(e)
        self.listing, self.skipped = listing, skipped

    def get(self, name: str) -> tuple[dict[str, Any], Path]:
        if name not in self.listing:
            known = ", ".join(self.listing) or "none"
            where = f"under {self.folder}" if self.folder else "(jaxstyle serve --models DIR)"
            raise RequestError(f"model {name!r}: no such model {where}; models: {known}", 404)
        return self.listing[name], self.folder / name

    def load(self, name: str) -> api.Model:
        """The loaded model (the caller holds ``lock``)."""
        if name not in self.loaded:
            self.loaded[name] = api.load_model(self.get(name)[1])
        return self.loaded[name]


# ---------------------------------------------------------------------------------------------
# The app.


def create_app(
    models_dir: str | Path | None = None,
    *,
    weights: str | Path | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
) -> Starlette:
    """The web page and its HTTP API as an ASGI app (serve it with uvicorn, or test it with
    ``starlette.testclient.TestClient``).

    Args:
        models_dir: a folder of model files and training workdirs offered for ``apply``.
        weights: the VGG weights file for ``stylize`` jobs (``None``: the cache).
        max_upload_bytes: the largest request body accepted (all files of a request).

    Returns:
        The app; ``app.state.jobs`` (:class:`Jobs`) and ``app.state.models`` (:class:`Models`)
        hold its state. Its worker thread starts with the app (lifespan) and stops with it.
    """
    import contextlib

    jobs = Jobs(None if weights is None else str(weights))
    models = Models(models_dir)

    async def page(request: Request) -> Response:
        return FileResponse(PAGE, media_type="text/html")

    async def list_models(request: Request) -> Response:
        await run_in_threadpool(models.scan)
        return JSONResponse({"models": list(models.listing.values()), "skipped": models.skipped})

    async def options(request: Request) -> Response:
        out = {}
        for f in dataclasses.fields(GatysConfig):
            default = f.default
            out[f.name] = {
                "default": list(default) if isinstance(default, tuple) else default,
                "help": f.metadata.get("help", ""),
                **({"choices": list(f.metadata["choices"])} if "choices" in f.metadata else {}),
            }
        for name in REFUSED:
            out.pop(name, None)
        return JSONResponse(out)

    async def demo_image(request: Request) -> Response:
        which = request.path_params["which"]
        if which not in ("content", "style"):
            raise RequestError(f"no demo image {which!r} (content or style)", 404)
        data = await run_in_threadpool(_demo_png, which)
        return Response(data, media_type="image/png")

    async def stylize(request: Request) -> Response:
        with tempfile.TemporaryDirectory(prefix="jaxstyle-serve-") as tmp:
            form = await _read_form(request, Path(tmp), ("content", "style"))
            job = await run_in_threadpool(_check_and_submit, jobs, form)
        return JSONResponse({"id": job.id, **jobs.status(job)}, status_code=202)

    async def job_status(request: Request) -> Response:
        job = jobs.get(request.path_params["id"])
        return JSONResponse(jobs.status(job))

    async def job_image(request: Request) -> Response:
        job = jobs.get(request.path_params["id"])
        data = await run_in_threadpool(job.png)
        if data is None:
            raise RequestError(f"job {job.id} has no image yet (state {job.state})", 404)
        headers = {"Cache-Control": "no-store"}
        if request.query_params.get("download"):
            headers["Content-Disposition"] = f'attachment; filename="jaxstyle-{job.id}.png"'
        return Response(data, media_type="image/png", headers=headers)

    async def job_stop(request: Request) -> Response:
        job = jobs.get(request.path_params["id"])
        jobs.stop(job)
        return JSONResponse(jobs.status(job))

    async def job_events(request: Request) -> Response:
        job = jobs.get(request.path_params["id"])

        async def stream():
            version, points, quiet = -1, 0, 0.0
            while True:
                if job.version != version:
                    status = jobs.status(job, since=points)
                    version, points = status["version"], points + len(status["history"])
                    yield f"data: {json.dumps(status)}\n\n"
                    quiet = 0.0
                    if status["state"] in FINISHED:
                        return
                elif quiet > 15.0:  # a comment line keeps proxies and browsers connected
                    yield ": waiting\n\n"
                    quiet = 0.0
                await asyncio.sleep(0.1)
                quiet += 0.1

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def apply(request: Request) -> Response:
        with tempfile.TemporaryDirectory(prefix="jaxstyle-serve-") as tmp:
            form = await _read_form(request, Path(tmp), ("image", "style"))
            data = await run_in_threadpool(_apply, models, form)
        return Response(data, media_type="image/png")

    async def on_request_error(request: Request, e: RequestError) -> Response:
        return _error(str(e), e.status)

    async def on_http_error(request: Request, e: HTTPException) -> Response:
        return _error(str(e.detail), e.status_code)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        jobs.start()
        try:
            yield
        finally:
            await run_in_threadpool(jobs.close)

    routes = [
        Route("/", page),
        Route("/api/models", list_models),
        Route("/api/options", options),
        Route("/api/demo/{which}", demo_image),
        Route("/api/stylize", stylize, methods=["POST"]),
        Route("/api/jobs/{id}", job_status),
        Route("/api/jobs/{id}/events", job_events),
        Route("/api/jobs/{id}/image", job_image),
        Route("/api/jobs/{id}/stop", job_stop, methods=["POST"]),
        Route("/api/apply", apply, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={RequestError: on_request_error, HTTPException: on_http_error},
        lifespan=lifespan,
    )
    app.add_middleware(_BodyLimit, limit=max_upload_bytes)
    app.state.jobs = jobs
    app.state.models = models
    return app


_demo_cache: dict[str, bytes] = {}


def _demo_png(which: str) -> bytes:
    """``jaxstyle demo``'s images, content at most 512 px on its long side."""
    from jaxstyle import demo

    if which not in _demo_cache:
        content, style, _ = demo.demo_images()
        if max(content.shape[:2]) > 512:
            content = imlib.resize_long_side(content, 512)
        _demo_cache["content"] = png_bytes(content, 6)
        _demo_cache["style"] = png_bytes(style, 6)
    return _demo_cache[which]


def _check_and_submit(jobs: Jobs, form: _Form) -> Job:
    """Settings, image headers, the API's checks (sizes, layers, memory), then decoding: every
    refusal before the job is queued."""
    cfg = stylize_config(form.fields)
    content_path = form.one_file("content")
    style_paths = form.files.get("style", [])
    if not style_paths:
        raise RequestError("style: give at least one style image (multipart field 'style')")
    content = _header(content_path, form)
    styles = [_header(p, form) for p in style_paths]
    try:
        api.check_stylize(
            [(form.names[content_path], content.shape)],
            [(form.names[p], s.shape) for p, s in zip(style_paths, styles, strict=True)],
            cfg,
        )
    except (ValueError, imlib.ImageError) as e:
        raise RequestError(_named(e, form.names)) from None
    top = max(cfg.resolved_scales())
    style_top = max(16, round(top * cfg.style_scale))
    return jobs.submit(
        cfg,
        _decode(content_path, form, top),
        [_decode(p, form, style_top) for p in style_paths],
    )


def _apply(models: Models, form: _Form) -> bytes:
    """Checks an apply request as ``jaxstyle apply`` does, runs the model, encodes the PNG."""
    from jaxstyle.models import ModelError

    fields = dict(form.fields)
    name = fields.pop("model", None)
    if not name:
        raise RequestError("model: give a model's name (GET /api/models lists them)")
    unknown = sorted(set(fields) - set(APPLY_OPTIONS))
    if unknown:
        valid = ", ".join(["model", "image", "style", *APPLY_OPTIONS])
        raise RequestError(f"unknown field(s) {', '.join(unknown)}; valid fields: {valid}")
    opts = {k: _convert(k, APPLY_OPTIONS[k], v) for k, v in fields.items()}
    size = opts.pop("size", 0)
    if size < 0:
        raise RequestError(f"size must be >= 0, got {size}")
    info, _ = models.get(name)
    image = _header(form.one_file("image"), form, size or None)
    styles = [_header(p, form) for p in form.files.get("style", [])]
    try:
        request = api.check_apply(
            info["kind"], name, image, styles=styles or None, names=APPLY_NAMES, **opts
        )
        with models.lock:
            model = models.load(name)
            model.check(request)
            out = model.run(request)
    except (ValueError, TypeError, imlib.ImageError, ModelError) as e:
        raise RequestError(_named(e, form.names)) from None
    return png_bytes(out)


# ---------------------------------------------------------------------------------------------
# The command.


def serve(
    sock: Any,
    models_dir: str | Path | None = None,
    *,
    weights: str | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    quiet: bool = False,
) -> None:
    """Serves the app on an already bound socket until interrupted (Ctrl-C).

    The CLI binds the socket itself so that a port in use is a one-line error before anything
    starts, and ``--port 0`` can report the port the system chose.
    """
    app = create_app(models_dir, weights=weights, max_upload_bytes=max_upload_bytes)
    config = uvicorn.Config(
        app,
        log_level="warning" if quiet else "info",
        access_log=not quiet,
        timeout_graceful_shutdown=2,
    )
    uvicorn.Server(config).run(sockets=[sock])
