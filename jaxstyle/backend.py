"""What runs where: the one module that looks at the backend JAX runs on.

Every choice that depends on the device (which convolution form to run, how Gatys' iterations
are looped) asks this module, so a newcomer finds them in one place and a test can pin them.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import jax

#: How Gatys' iterations are driven between progress reports: ``device`` runs a chunk as one
#: ``lax.while_loop`` program; ``host`` loops in Python over one compiled step.
LOOP_KINDS = ("device", "host")


@functools.cache
def on_cpu() -> bool:
    """True when JAX's default backend is the CPU (XLA:CPU)."""
    return jax.default_backend() == "cpu"


#: ``None``: convolution forms follow the default backend; ``True``/``False``: forced (see
#: :func:`conv_forms`).
_CPU_CONV_FORMS: bool | None = None


def cpu_conv_forms() -> bool:
    """Whether :mod:`jaxstyle.nets.conv` traces its CPU forms (Winograd, space-to-depth, ...)
    rather than XLA's convolution: on the CPU backend, unless :func:`conv_forms` says otherwise."""
    return on_cpu() if _CPU_CONV_FORMS is None else _CPU_CONV_FORMS


def conv_forms_forced() -> bool | None:
    """``True``/``False`` inside :func:`conv_forms` (``"cpu"``/``"xla"``), else ``None``."""
    return _CPU_CONV_FORMS


@contextlib.contextmanager
def conv_forms(kind: str) -> Iterator[None]:
    """Within the block, trace ``"cpu"`` convolution forms or plain ``"xla"`` convolutions
    whatever the default backend: a program exported for another platform or runtime (GPU,
    TensorFlow, TFLite) is traced on this machine but must not take this machine's choice.
    Only new traces see it: a ``jax.jit`` function already traced at the same shapes reuses
    its cached trace (call its ``__wrapped__`` function inside the block)."""
    global _CPU_CONV_FORMS
    if kind not in ("cpu", "xla"):
        raise ValueError(f"unknown convolution forms {kind!r} (cpu or xla)")
    old, _CPU_CONV_FORMS = _CPU_CONV_FORMS, kind == "cpu"
    try:
        yield
    finally:
        _CPU_CONV_FORMS = old


def default_loop_kind() -> str:
    """The loop kind measured faster on this backend.

    XLA:CPU runs the body of a ``while_loop`` about 2x slower than the same computation
    dispatched on its own (0.78 vs 0.43 s per VGG16 iteration at 256 px, measured on 2 cores),
    so on CPU a chunk is a host loop over a jitted single step; the dispatch overhead is
    microseconds against hundreds of milliseconds of work. On GPU/TPU a device loop keeps the
    host out of the way.
    """
    return "host" if on_cpu() else "device"


#: Bytes of device memory per output pixel, measured with XLA's memory analysis of the compiled
#: programs (``compiled.memory_analysis()``: temporaries + outputs) at 256 px on CPU:
#: VGG16 forward + backward to the input through relu5_1 (a Gatys evaluation), 3,126 B;
#: Johnson's full network forward (``apply``), 1,294 B. They fall slowly with size, so these
#: round up. Gatys adds its L-BFGS history: 2 x history_size images of 12 bytes a pixel.
GATYS_BYTES_PER_PIXEL = 3_200
JOHNSON_BYTES_PER_PIXEL = 1_400
#: Share of the memory a run may plan to use (the rest is left to the OS, XLA and Python).
MEMORY_SHARE = 0.7


def memory_budget() -> int:
    """Bytes a run may use: ``MEMORY_SHARE`` of the accelerator's memory, or of physical RAM
    on CPU."""
    from jaxstyle.images import physical_memory

    total = 0
    if not on_cpu():
        stats = jax.devices()[0].memory_stats() or {}
        total = int(stats.get("bytes_limit", 0))
    return int(MEMORY_SHARE * (total or physical_memory()))


def gatys_bytes(pixels: int, history_size: int) -> int:
    """Estimated peak memory of optimising ``pixels`` output pixels (all images of a batch)."""
    return pixels * (GATYS_BYTES_PER_PIXEL + 2 * history_size * 12)
