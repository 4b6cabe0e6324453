"""The report's analyses and the benchmarks, one thin script per analysis.

Run a script from the repository root as ``python -m experiments.NAME [--smoke] [--out DIR]``;
each script's docstring starts with its command line and runtime. What the scripts share
(flags, input images, output files, figures, the report's loss-weight mapping, timing, the
PyTorch references) lives in :mod:`experiments.lib`.
"""
