"""The report's analyses and the benchmarks, one thin script per analysis.

Run a script from the repository root as ``python -m experiments.NAME [--smoke] [--out DIR]``;
each script's docstring starts with its command line and runtime. What the scripts share
(flags, input images, output files, figures, the report's loss-weight mapping, timing, the
PyTorch references) lives in :mod:`experiments.lib`.
"""

import sys


def _run_as_a_script() -> bool:
    """Whether this process is ``python -m experiments.NAME`` (not a test importing one)."""
    argv = list(getattr(sys, "orig_argv", ()))
    pairs = zip(argv[:-1], argv[1:], strict=True)
    return any(a == "-m" and b.startswith("experiments.") for a, b in pairs)


if _run_as_a_script():  # before JAX is imported: the benchmarks run as the CLI does
    from jaxstyle import hostmem

    hostmem.relaunch_with_huge_pages()
