"""Host memory in huge pages: XLA:CPU's buffers without a page fault every 4 KB.

XLA:CPU allocates an executable's buffers with ``malloc`` on every call, and glibc serves
blocks over 32 MB (and any block a worker thread's 64 MB arena cannot hold) with a fresh
``mmap``, unmapped again on ``free``. So every call of a program with large buffers faults its
pages in anew: a VGG16 loss-and-gradient evaluation took 44,000 minor page faults a call at
256 px (172 MB) and 150,000 at 512 px. With glibc's ``glibc.malloc.hugetlb=1`` tunable those
blocks are given transparent huge pages (``madvise``), 2 MB a fault: 400 faults at 256 px, and
the evaluation ran 456-460 -> 411-415 ms at 256 px and 1706-1740 -> 1559-1602 ms at 512 px
(``README.md``, "Performance"). Peak memory did not change (1.51-1.52 GB for a 512 px
``stylize``).

glibc reads its tunables only when a process starts, so :func:`relaunch_with_huge_pages` runs
the same command again in place (``os.execv``: same process id, same open files) with the
tunable added, before anything heavy is imported. The ``jaxstyle`` command and the benchmarks
call it first thing. It does nothing off Linux, on glibc older than 2.35, where transparent
huge pages are off (``never``), when the tunable is already set, or with
``JAXSTYLE_HUGE_PAGES=0``. A Python program that imports :mod:`jaxstyle` can get the same by
starting with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` in its environment.

Rejected: keeping freed memory in the process instead (``mallopt``: one arena, no ``mmap``,
no trimming) removed the faults too (458 -> 402 ms at 256 px), but fragmentation raised the
peak memory of a 512 px ``stylize`` from 1.5 GB to 1.8-3.7 GB, run to run.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

from jaxstyle import configs

#: Set to ``0`` (or ``off``, ``false``, ``no``) to keep the system's defaults.
ENV = "JAXSTYLE_HUGE_PAGES"
TUNABLE = "glibc.malloc.hugetlb"
#: Where Linux says whether transparent huge pages are used (``always [madvise] never``).
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _glibc_at_least(major: int, minor: int) -> bool:
    lib, version = platform.libc_ver()
    if lib != "glibc":
        return False
    try:
        parts = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return False
    return parts >= (major, minor)


def _thp_available() -> bool:
    try:
        return "[never]" not in THP_SETTING.read_text()
    except OSError:
        return False


def tunables_with_huge_pages(environ: Mapping[str, str]) -> str | None:
    """The ``GLIBC_TUNABLES`` value that adds huge pages, or ``None`` where it is not wanted,
    not supported, or already set (see the module docstring)."""
    if configs.switched_off(ENV, environ):
        return None
    current = environ.get("GLIBC_TUNABLES", "")
    if TUNABLE in current:
        return None
    if platform.system() != "Linux" or not _glibc_at_least(2, 35) or not _thp_available():
        return None
    return f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"


def relaunch_with_huge_pages() -> None:
    """Run this process's command again, in place, with huge pages for large blocks; returns
    (having done nothing) where :func:`tunables_with_huge_pages` says no or relaunching fails.

    Call it before importing JAX: what ran before is run again."""
    tunables = tunables_with_huge_pages(os.environ)
    argv = getattr(sys, "orig_argv", None)
    if tunables is None or not argv or not sys.executable:
        return
    env = {**os.environ, "GLIBC_TUNABLES": tunables}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, env)
    except OSError:
        return
