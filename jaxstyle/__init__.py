"""jaxstyle: neural style transfer in JAX/Flax (Gatys et al. 2015; Johnson et al. 2016).

The Python API (:mod:`jaxstyle.api`) is exported here lazily: ``import jaxstyle`` stays cheap
(no JAX) and the first use of ``jaxstyle.stylize``, ``jaxstyle.load_model`` or
``jaxstyle.Model`` imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Names exported from :mod:`jaxstyle.api` on first use.
_API = ("Model", "load_model", "stylize")
__all__ = ["Model", "__version__", "load_model", "stylize"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ resolves them
    from jaxstyle.api import Model, load_model, stylize


def __getattr__(name: str) -> Any:
    if name in _API:
        from jaxstyle import api

        return getattr(api, name)
    raise AttributeError(f"module 'jaxstyle' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
