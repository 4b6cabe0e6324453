"""Convolution forms chosen by measurement on this machine, once, and remembered.

:mod:`jaxstyle.nets.conv` can compute each convolution of the networks in several forms (XLA's
convolution, Winograd, space-to-depth, im2col, shifted matmuls, per-phase upsampling). Which is
fastest depends on the CPU: shape rules tuned on a 2-core AVX2 machine were 1.3x slower than
PyTorch on an AVX-512 one. So, as cuDNN's autotuner and XLA's GPU autotuning do, the first
time a program is traced with a convolution *site* (its kind, input and kernel shapes, stride
and dtype) on CPU, every valid form is compiled and timed at that shape, forward and (when the
program differentiates through it) backward; the fastest form whose values and gradients agree
with the reference (XLA's convolution) within tolerance is kept, and the choice is written to
``$JAXSTYLE_HOME/autotune/<machine>.json``. Later traces, in this process or any later one on
the same machine, read it.

* A machine is the CPU model and its vector extensions, the core count, the JAX and jaxlib
  versions, ``XLA_FLAGS`` and ``GLIBC_TUNABLES`` (huge pages, :mod:`jaxstyle.hostmem`): any
  of them changing starts a new file.
* Sites are keyed with their spatial size rounded to half an octave of pixels, so nearby image
  sizes share one measurement (the ranking is kept, and a form that cannot run a particular
  shape, e.g. Winograd on an odd size, falls to the next).
* Each tuned site prints one line to stderr with what it chose and the seconds it cost; a
  program with N new sites pays N of them, once per machine.
* ``JAXSTYLE_AUTOTUNE=0`` (or ``off``) turns it off: the fixed shape rules
  (:func:`jaxstyle.nets.conv.fixed_forms`) run, as they do on GPU/TPU (XLA's convolution, which
  those compilers autotune themselves) and while a program is exported for another runtime
  (:func:`jaxstyle.backend.conv_forms`).

Timing runs in a separate thread so that it never sees the trace being built, with random
inputs of the site's shape: a median of :data:`REPEATS` runs after a warm-up.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fcntl
import functools
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle import backend, configs

ENV = "JAXSTYLE_AUTOTUNE"
#: Timed runs per form after its warm-up (the median is kept), as many as fit TIME_BUDGET
#: seconds; a form whose first run is over PRUNE times the best so far is timed once.
REPEATS = 5
TIME_BUDGET = 0.5
PRUNE = 1.5
#: Largest error a form may have against the reference, relative to the reference's largest
#: magnitude (values and each gradient), per dtype.
TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2, "float16": 3e-3}
#: A form must beat the reference (XLA's convolution) by more than this share to replace it.
MARGIN = 0.03
#: Version of the file's layout and of what is measured (a change starts over). 2: Winograd's
#: transforms got faster (and compile faster) and VGG's convolutions a Winograd gradient, so
#: version 1's rankings no longer say which form is fastest.
VERSION = 2


@dataclasses.dataclass(frozen=True)
class Site:
    """One convolution at one shape (see :mod:`jaxstyle.nets.conv`)."""

    kind: str  # "conv" | "same3x3" | "upsample"
    x_shape: tuple
    k_shape: tuple
    stride: int
    dtype: str

    @property
    def grads(self) -> str:
        """Which gradients a backward pass computes: VGG (``same3x3``) is the frozen loss
        network, only ever differentiated to its input; the others are trained."""
        return "x" if self.kind == "same3x3" else "xk"

    def key(self) -> str:
        n, h, w, cin = self.x_shape
        k, cout = self.k_shape[0], self.k_shape[3]
        bucket = round(2 * math.log2(max(h * w, 1)))
        return f"{self.kind} n{n} px2^{bucket / 2:g} {cin}->{cout} k{k} s{self.stride} {self.dtype}"

    def describe(self) -> str:
        n, h, w, cin = self.x_shape
        k, cout = self.k_shape[0], self.k_shape[3]
        s = f" stride {self.stride}" if self.stride != 1 else ""
        return f"{self.kind} {k}x{k} {cin}->{cout}{s} on {n}x{h}x{w}"


def enabled() -> bool:
    """Whether convolution forms are measured: on CPU, unless ``JAXSTYLE_AUTOTUNE`` is 0/off
    or :func:`jaxstyle.backend.conv_forms` forces a platform's forms."""
    if configs.switched_off(ENV):
        return False
    return backend.conv_forms_forced() is None and backend.on_cpu()


@functools.cache
def machine() -> dict[str, str]:
    """What makes a measurement this machine's."""
    model, flags = platform.processor(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                wanted = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "fma", "neon", "asimd")
                flags = " ".join(f for f in value.split() if f in wanted)
                break
    except OSError:
        pass
    import jaxlib

    return {
        "cpu": model or platform.machine(),
        "flags": flags,
        "cores": str(os.cpu_count()),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),  # huge pages (jaxstyle.hostmem)
        "layout": str(VERSION),
    }


def cache_file() -> Path:
    """``$JAXSTYLE_HOME/autotune/<machine>.json``."""
    from jaxstyle.weights.format import home

    digest = hashlib.sha256(json.dumps(machine(), sort_keys=True).encode()).hexdigest()[:16]
    return home() / "autotune" / f"{digest}.json"


_lock = threading.Lock()
_cache: dict[str, dict] | None = None  # the sites of _cache_path
_cache_path: Path | None = None
#: The sites this process used and the forms they ran: {key: (site, forward, backward)}.
_used: dict[str, list] = {}  # key: [site, forward, backward ("-": not traced)]
_measuring = threading.local()


def _load() -> dict[str, dict]:
    global _cache, _cache_path
    path = cache_file()
    if _cache is None or path != _cache_path:
        _cache_path = path
        try:
            _cache = json.loads(path.read_text()).get("sites", {})
        except (OSError, ValueError):
            _cache = {}
    return _cache


def _store(key: str, direction: str, entry: dict) -> None:
    """Merge one measurement into the cache file (locked, written whole then renamed, so
    concurrent processes never see half a file)."""
    path = cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            sites = json.loads(path.read_text()).get("sites", {})
        except (OSError, ValueError):
            sites = {}
        sites.setdefault(key, {})[direction] = entry
        doc = {"machine": machine(), "sites": sites}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    _load().setdefault(key, {})[direction] = entry


def reset() -> None:
    """Forget what this process read and used (tests; a changed ``$JAXSTYLE_HOME``)."""
    global _cache
    with _lock:
        _cache = None
        _used.clear()
    machine.cache_clear()


def used() -> list[dict]:
    """The sites traced in this process and the forms they ran (for reports)."""
    rows = []
    for key, (site, fwd, bwd) in sorted(_used.items()):
        entry = (_cache or {}).get(key, {})
        times = {d: dict(entry.get(d, {}).get("ranking", [])) for d in ("forward", "backward")}
        rows.append({
            "site": site.describe(), "key": key, "forward": fwd, "backward": bwd,
            "forward_ms": 1e3 * times["forward"].get(fwd, float("nan")),
            "xla_forward_ms": 1e3 * times["forward"].get(_reference(site), float("nan")),
            "backward_ms": 1e3 * times["backward"].get(bwd, float("nan")),
            "xla_backward_ms": 1e3 * times["backward"].get(_reference(site), float("nan")),
        })  # fmt: skip
    return rows


def _reference(site: Site) -> str:
    from jaxstyle.nets import conv

    return conv.REFERENCE[site.kind]


def tunes(site: Site) -> bool:
    """Whether ``site``'s forms are measured: :func:`enabled`, and its shapes are numbers
    (not an export's symbolic sizes)."""
    return enabled() and all(isinstance(d, int) for d in (*site.x_shape, *site.k_shape))


def forms(site: Site) -> tuple[str, str]:
    """(forward form, backward form) for ``site``: measured (and cached) when it
    :func:`tunes`, else the fixed rules."""
    from jaxstyle.nets import conv

    if not tunes(site):
        return conv.fixed_forms(site)
    return choose(site, "forward"), choose(site, "backward")


def choose(site: Site, direction: str) -> str:
    """The form of ``site`` for ``direction`` (``forward`` or ``backward``), measured the first
    time this machine sees the site, and recorded for :func:`used`."""
    name = _choose(site, direction)
    if not getattr(_measuring, "on", False):  # not a site inside a form being timed
        row = _used.setdefault(site.key(), [site, "-", "-"])
        row[1 if direction == "forward" else 2] = name
    return name


def _choose(site: Site, direction: str) -> str:
    from jaxstyle.nets import conv

    valid = conv.valid_forms(site, backward=direction == "backward")
    if len(valid) == 1:
        return valid[0]
    with _lock:
        entry = _load().get(site.key(), {}).get(direction)
    if entry is not None and not set(valid) <= {n for n, _ in entry["ranking"]} | set(
        entry.get("rejected", {})
    ):
        entry = None  # measured before some of its forms existed (the per-image ones): again
    if entry is None:
        # A fresh thread: JAX's trace state is per thread, so the timed programs are compiled
        # and run as programs of their own, not staged into the caller's trace. (No lock is
        # held: a form may itself contain sites, tuned in turn from that thread.)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            entry = pool.submit(_measure, site, direction, valid).result()
        with _lock:
            _store(site.key(), direction, entry)
    return _pick(entry["ranking"], valid, conv.REFERENCE[site.kind])


def _run_timed(fn, args) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def _timed(fn, args, first: float, best: float) -> float:
    """Median seconds of ``fn(*args)``: the ``first`` run's and more, at least two and up to
    :data:`REPEATS` runs within about :data:`TIME_BUDGET` seconds; none more when the first is
    already over :data:`PRUNE` times the ``best`` form's (it cannot win)."""
    times = [first]
    while len(times) < REPEATS and first <= PRUNE * best:
        if len(times) >= 2 and sum(times) + first > TIME_BUDGET:
            break
        times.append(_run_timed(fn, args)[1])
    if len(times) == 2:  # the first run may still pay for allocations: keep the faster
        return min(times)
    return float(np.median(times))


def _pick(ranking: list, valid: list[str], reference: str) -> str:
    """The fastest valid form, or the reference when it is within :data:`MARGIN` of it."""
    ranked = [(name, t) for name, t in ranking if name in valid]
    if not ranked:
        return reference
    ref = dict(ranked).get(reference)
    if ref is not None and ref <= (1 + MARGIN) * ranked[0][1]:
        return reference  # a near tie is noise: keep the plain form
    return ranked[0][0]


def _measure(site: Site, direction: str, valid: list[str]) -> dict:
    """Time every valid form of ``site`` (forward, or its backward pass with the residuals
    given), check it against the reference, and rank the ones that agree."""
    from jaxstyle.nets import conv

    _measuring.on = True
    t0 = time.perf_counter()
    kx, kk, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    dtype = jnp.dtype(site.dtype)
    x = jax.random.normal(kx, site.x_shape, jnp.float32).astype(dtype)
    kernel = (jax.random.normal(kk, site.k_shape, jnp.float32) / 10).astype(dtype)
    table = conv.FORMS[site.kind]
    ref_name = conv.REFERENCE[site.kind]
    out_shape = jax.eval_shape(lambda a, b: table[ref_name](a, b, site.stride), x, kernel)
    g = jax.random.normal(kg, out_shape.shape, jnp.float32).astype(dtype)

    def program(name):
        def fwd(a, b):
            return table[name](a, b, site.stride)

        if direction == "forward":
            return jax.jit(fwd), (x, kernel)

        def bwd(a, b, cot):
            if site.grads == "x":
                return jax.vjp(lambda a: fwd(a, b), a)[1](cot)
            return jax.vjp(fwd, a, b)[1](cot)

        return jax.jit(bwd), (x, kernel, g)

    def err(out, ref):
        out, ref = jax.tree.leaves(out), jax.tree.leaves(ref)
        return max(
            float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
            / max(float(jnp.max(jnp.abs(b.astype(jnp.float32)))), 1e-30)
            for a, b in zip(out, ref, strict=True)
        )

    tol = TOLERANCE.get(site.dtype, 1e-4)
    ranking, rejected, ref = [], {}, None
    best = float("inf")
    for name in sorted(valid, key=lambda n: n != ref_name):  # the reference first
        fn, args = program(name)
        fn = fn.lower(*args).compile()
        out, first = _run_timed(fn, args)
        if ref is None:
            ref = out
        e = err(out, ref)
        if e > tol:
            rejected[name] = e
            continue
        ranking.append([name, _timed(fn, args, first, best)])
        best = min(best, ranking[-1][1])
    ranking.sort(key=lambda r: r[1])
    seconds = time.perf_counter() - t0
    best = _pick(ranking, valid, ref_name)
    times = ", ".join(f"{n} {1e3 * t:.1f}" for n, t in ranking)
    print(
        f"jaxstyle: tuned {site.describe()} ({direction}): {best} [ms: {times}] "
        f"in {seconds:.1f} s, once for this machine",
        file=sys.stderr,
    )
    return {"ranking": ranking, "rejected": rejected, "seconds": seconds, "shape": site.describe()}
