"""Huge pages for XLA's host buffers (jaxstyle.hostmem): when the command relaunches itself
with glibc's tunable, and that it relaunches once, in place, keeping its arguments."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jaxstyle import hostmem

SUPPORTED = hostmem.tunables_with_huge_pages({}) is not None
NEEDS_SUPPORT = pytest.mark.skipif(
    not SUPPORTED, reason="needs Linux, glibc >= 2.35 and transparent huge pages not 'never'"
)


@NEEDS_SUPPORT
def test_the_tunable_is_added_to_what_is_set_unless_set_or_turned_off():
    assert hostmem.tunables_with_huge_pages({}) == "glibc.malloc.hugetlb=1"
    other = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert (
        hostmem.tunables_with_huge_pages(other) == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    )
    assert hostmem.tunables_with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
    for off in ("0", "off", "False", " no "):
        assert hostmem.tunables_with_huge_pages({hostmem.ENV: off}) is None


def test_nothing_is_added_where_huge_pages_are_off_or_glibc_is_old(tmp_path, monkeypatch):
    never = tmp_path / "enabled"
    never.write_text("always madvise [never]\n")
    monkeypatch.setattr(hostmem, "THP_SETTING", never)
    assert hostmem.tunables_with_huge_pages({}) is None
    monkeypatch.setattr(hostmem, "THP_SETTING", tmp_path / "missing")
    assert hostmem.tunables_with_huge_pages({}) is None
    monkeypatch.setattr(hostmem.platform, "libc_ver", lambda: ("glibc", "2.31"))
    assert not hostmem._glibc_at_least(2, 35)
    monkeypatch.setattr(hostmem.platform, "libc_ver", lambda: ("", ""))
    assert not hostmem._glibc_at_least(2, 35)


SHOW = (
    "import os, sys; from jaxstyle import hostmem; print('start', flush=True); "
    "hostmem.relaunch_with_huge_pages(); "
    "print(os.environ.get('GLIBC_TUNABLES'), os.getpid(), sys.argv[1:])"
)


def _run(env_extra, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hostmem.ENV)}
    out = subprocess.run(
        [sys.executable, "-c", SHOW, *args],
        env={**env, **env_extra},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split("\n")


@NEEDS_SUPPORT
def test_the_process_relaunches_once_in_place_with_its_arguments():
    lines = _run({}, "a", "b c")
    # The code before the relaunch ran twice (once per start), the rest once, in one process.
    assert lines[:2] == ["start", "start"]
    tunables, pid, argv = lines[2].split(" ", 2)
    assert tunables == "glibc.malloc.hugetlb=1"
    assert argv == "['a', 'b c']"
    assert pid.isdigit()


def test_turned_off_the_process_runs_once_as_it_was():
    lines = _run({hostmem.ENV: "0"}, "a")
    assert lines[0] == "start"
    assert lines[1].startswith("None ")


@NEEDS_SUPPORT
def test_the_command_relaunches_and_still_parses_its_arguments():
    code = "import sys; from jaxstyle.cli import main; sys.exit(main())"
    out = subprocess.run(
        [sys.executable, "-c", code, "stylize", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: jaxstyle stylize")
