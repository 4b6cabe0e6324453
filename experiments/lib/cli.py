"""The flags of the experiment scripts.

Every script has ``--out``, ``--smoke``, ``--content-dir``/``--style-dir``, ``--weights`` and
``--seed`` (:func:`parser`). A script that runs Gatys exposes the ``GatysConfig`` fields it lets
a user change through :func:`gatys_flags`: the flags, their types, choices and help are
``jaxstyle stylize``'s, with the script's own defaults (the report's settings, smaller sizes);
:func:`gatys_config` builds the config back from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from experiments.lib import paths
from jaxstyle.configs import GatysConfig, add_config_flags, config_from_args


def fail(message: str) -> NoReturn:
    """Ends the script with one ``error:`` line on stderr and exit status 2 (a usage error)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default once: the config-derived flags already say theirs."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        return text if "(default:" in text else super()._get_help_string(action)


def parser(doc: str, name: str) -> argparse.ArgumentParser:
    """The flags every script has: ``--out``, ``--smoke``, the image folders, ``--weights``..."""
    ap = argparse.ArgumentParser(
        prog=f"python -m experiments.{name}",
        description=doc.strip().split("\n\n")[1] if "\n\n" in doc else doc,
        formatter_class=_Defaults,
    )
    ap.add_argument("--out", default=f"out/{name}", help="output folder")
    ap.add_argument(
        "--smoke", action="store_true", help="tiny sizes and a couple of iterations (tests)"
    )
    add_image_dir_flags(ap)
    ap.add_argument("--weights", default=None, help="VGG weights file (default: the cache)")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    return ap


def add_image_dir_flags(ap: argparse.ArgumentParser) -> None:
    """``--content-dir`` and ``--style-dir`` (default: ``../shared/images/*`` where present)."""
    for kind in paths.KINDS:
        ap.add_argument(
            f"--{kind}-dir",
            default=None,
            help=f"folder of {kind} images, named by --{kind} "
            f"(default: {paths.default_image_dir(kind)}, where it exists)",
        )


def add_pair_flags(ap: argparse.ArgumentParser) -> None:
    """``--content`` and ``--style``: one image pair by name in the image folders (or paths), the
    report's tubingen + starry night by default."""
    ap.add_argument("--content", default="tubingen", help="name in --content-dir, or a path")
    ap.add_argument("--style", default="starry_night", help="name in --style-dir, or a path")


def gatys_flags(
    ap: argparse.ArgumentParser | argparse._ArgumentGroup,
    fields: Sequence[str],
    **defaults: Any,
) -> None:
    """Adds the flags of the ``GatysConfig`` ``fields`` (``jaxstyle stylize``'s) to ``ap``.

    Args:
        ap: a parser or an argument group.
        fields: the config fields the script lets a user set; the others keep the config's
            defaults or are set by the script (what it sweeps over).
        **defaults: the script's defaults, by field name, where they differ from the config's.
    """
    unknown = (set(fields) | set(defaults)) - {f.name for f in dataclasses.fields(GatysConfig)}
    if unknown or set(defaults) - set(fields):
        raise TypeError(f"not GatysConfig fields of this script: {sorted(unknown or defaults)}")
    skip = [f.name for f in dataclasses.fields(GatysConfig) if f.name not in fields]
    add_config_flags(ap, GatysConfig, skip=skip, defaults=defaults)


def gatys_config(args: argparse.Namespace, **fixed: Any) -> GatysConfig:
    """The ``GatysConfig`` of the parsed flags, with the fields the script sets (``fixed``)."""
    return dataclasses.replace(config_from_args(GatysConfig, args), **fixed)


def parse(ap: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``ap.parse_args(argv)``, keeping the arguments (``args.argv``) for the summary."""
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def smoke(args: argparse.Namespace, ap: argparse.ArgumentParser, **values: Any) -> None:
    """With ``--smoke``, replaces the flags still at their defaults by ``values``."""
    if not args.smoke:
        return
    for key, value in values.items():
        if getattr(args, key) == ap.get_default(key):
            setattr(args, key, value)


def csv_list(kind: type = str):
    """An argparse type for comma-separated values."""

    def parse_list(text: str) -> tuple:
        try:
            return tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated values: {text!r}") from None

    return parse_list
