"""Iterative style transfer (Gatys, Ecker & Bethge 2015): optimise the pixels of an image.

The image ``x`` minimises ``content_weight * content + style_weight * style + tv_weight * tv``
(formulas in :mod:`jaxstyle.losses`) with L-BFGS from jaxopt (or Adam from optax), under jit.

* :mod:`~jaxstyle.gatys.objective`: the loss of one image.
* :mod:`~jaxstyle.gatys.lbfgs`: the optimisers of one image behind one ``init``/``step``
  interface, and the one function that edits jaxopt's L-BFGS state.
* :mod:`~jaxstyle.gatys.programs`: the compiled programs (``jax.jit`` with the settings
  static), ``vmap``-ed over a batch of same-shape images; the two loop kinds.
* :mod:`~jaxstyle.gatys.stylize`: the driver that sequences scales, targets, starts, chunks,
  restarts, progress and the log.
* :mod:`~jaxstyle.gatys.regions`: Gram matrices over weighted regions (style masks, tiles).
* :mod:`~jaxstyle.gatys.tiles`: scales too large for memory, optimised tile by tile against
  the whole image's loss.
"""

from jaxstyle.gatys.lbfgs import FIRST_STEP
from jaxstyle.gatys.objective import loss_weights, objective
from jaxstyle.gatys.programs import EXPLODE_FACTOR, EXPLODE_PATIENCE
from jaxstyle.gatys.stylize import MAX_RESTARTS, GatysResult, stylize

__all__ = [
    "EXPLODE_FACTOR",
    "EXPLODE_PATIENCE",
    "FIRST_STEP",
    "MAX_RESTARTS",
    "GatysResult",
    "loss_weights",
    "objective",
    "stylize",
]
