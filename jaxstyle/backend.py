"""What runs where: the one module that looks at the backend JAX runs on.

Every choice that depends on the device (which convolution form to run, how Gatys' iterations
are looped) asks this module, so a newcomer finds them in one place and a test can pin them.
"""

from __future__ import annotations

import functools

import jax

#: How Gatys' iterations are driven between progress reports: ``device`` runs a chunk as one
#: ``lax.while_loop`` program; ``host`` loops in Python over one compiled step.
LOOP_KINDS = ("device", "host")


@functools.cache
def on_cpu() -> bool:
    """True when JAX's default backend is the CPU (XLA:CPU)."""
    return jax.default_backend() == "cpu"


def default_loop_kind() -> str:
    """The loop kind measured faster on this backend.

    XLA:CPU runs the body of a ``while_loop`` about 2x slower than the same computation
    dispatched on its own (0.78 vs 0.43 s per VGG16 iteration at 256 px, measured on 2 cores),
    so on CPU a chunk is a host loop over a jitted single step; the dispatch overhead is
    microseconds against hundreds of milliseconds of work. On GPU/TPU a device loop keeps the
    host out of the way.
    """
    return "host" if on_cpu() else "device"
