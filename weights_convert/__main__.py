"""Converts VGG weights, or pytorch/examples fast_neural_style models, into jaxstyle's formats.

    python -m weights_convert SRC -o OUT.safetensors --arch vgg16 [--layout torchvision]
    python -m weights_convert johnson SRC.pth -o model.safetensors
    python -m weights_convert adain vgg_normalised.pth decoder.pth -o model.safetensors

SRC may be ONNX, a torch state dict (.pth/.pt/.bin), safetensors (torchvision/timm or jaxstyle)
or Keras .h5. pytorch-AdaIN's ``vgg_normalised.pth`` (``--arch vgg19``) converts into a VGG19
file with input convention ``normalised``, its 1x1 input conv kept; its ``decoder.pth`` is
refused here (it belongs to ``adain``). OUT is written atomically: a failed conversion leaves
an existing OUT untouched.
An OUT that is SRC (symlinks included) or cannot be written is refused before SRC is read.
Exits 2 with a one-line ``error: ...`` on stderr when SRC cannot be converted.

The readers and converters are :mod:`jaxstyle.weights`; this module only handles the flags.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from jaxstyle.fileio import OutputError, check_writable, refuse_overwriting_inputs
from jaxstyle.nets.vgg import ARCHS
from jaxstyle.weights.format import WeightsError, save
from jaxstyle.weights.readers import LAYOUTS, read_vgg_file

#: First word selecting the Johnson transformer-network converter.
JOHNSON = "johnson"
#: First word selecting the AdaIN (naoto0804/pytorch-AdaIN) converter.
ADAIN = "adain"
MAX_LISTED_KEYS = 20


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags of ``python -m weights_convert``."""
    p = argparse.ArgumentParser(
        prog="python -m weights_convert",
        description="Convert VGG weights (ONNX, torch, safetensors, Keras .h5) to jaxstyle.",
    )
    p.add_argument("src", metavar="SRC", help="weights file to convert")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="destination .safetensors")
    p.add_argument("--arch", choices=tuple(ARCHS), default="vgg16", help="network (vgg16)")
    p.add_argument(
        "--layout",
        choices=tuple(LAYOUTS),
        default=None,
        help="tensor naming of SRC; detected from the tensor names when omitted",
    )
    return p


def _keys_line(label: str, keys: Sequence[str]) -> str:
    if not keys:
        return f"{label}: none"
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    more = f", ... and {len(keys) - MAX_LISTED_KEYS} more" if len(keys) > MAX_LISTED_KEYS else ""
    return f"{label} ({len(keys)}): {shown}{more}"


def _error(message: str) -> int:
    # One line, so that scripts and users see the whole reason at once.
    print("error: " + " ".join(message.split()), file=sys.stderr)
    return 2


def _convert(out: str, sources: Sequence[str], work: Callable[[], Any]) -> tuple[Any, int]:
    """Refuses, before any work, an OUT that is a source or that cannot be written; then runs
    ``work``. Returns ``(its result, 0)``, or ``(None, 2)`` after one ``error:`` line."""
    try:
        refuse_overwriting_inputs([out], sources)
        check_writable(out)
        return work(), 0
    except (WeightsError, OutputError) as e:
        return None, _error(str(e))
    except OSError as e:  # e.g. OUT's folder is not writable
        return None, _error(f"{out}: cannot write ({e.strerror or e})")


def _main_johnson(argv: Sequence[str]) -> int:
    """``python -m weights_convert johnson SRC -o OUT``: a fast_neural_style TransformerNet."""
    p = argparse.ArgumentParser(
        prog=f"python -m weights_convert {JOHNSON}",
        description="Convert a pytorch/examples fast_neural_style TransformerNet state dict "
        "(.pth/.pt/.model or .safetensors) to a jaxstyle model file.",
    )
    p.add_argument("src", metavar="SRC", help="state dict to convert")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="destination .safetensors")
    args = p.parse_args(argv)

    from jaxstyle.weights.johnson import write_johnson

    done, status = _convert(args.out, [args.src], lambda: write_johnson(args.src, args.out))
    if status:
        return status
    out, config, report, _ = done
    print(report.summary())
    print(_keys_line("missing keys", []))
    print(_keys_line("unexpected keys (dropped)", report.unexpected))
    channels = ",".join(map(str, config.channels))
    print(
        f"wrote {out} (TransformerNet channels {channels}, {config.num_res} residual blocks, "
        f"0-{config.io_scale:g} {config.output} output)"
    )
    return 0


def _main_adain(argv: Sequence[str]) -> int:
    """``python -m weights_convert adain VGG DECODER -o OUT``: one AdaIN model file."""
    p = argparse.ArgumentParser(
        prog=f"python -m weights_convert {ADAIN}",
        description="Convert the vgg_normalised.pth and decoder.pth state dicts of the PyTorch "
        "AdaIN port (naoto0804/pytorch-AdaIN) to one jaxstyle model file.",
    )
    p.add_argument("vgg", metavar="VGG", help="vgg_normalised.pth (the encoder)")
    p.add_argument("decoder", metavar="DECODER", help="decoder.pth")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="destination .safetensors")
    args = p.parse_args(argv)

    from jaxstyle.weights.adain import write_adain

    done, status = _convert(
        args.out, [args.vgg, args.decoder], lambda: write_adain(args.vgg, args.decoder, args.out)
    )
    if status:
        return status
    out, reports, _ = done
    for report in reports:
        print(report.summary())
        print(_keys_line("  missing keys", []))
        print(_keys_line("  unused keys (dropped)", report.unexpected))
    print(f"wrote {out} (AdaIN: VGG19 encoder to relu4_1 and its decoder)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the converter; returns the process exit status (0 ok, 2 bad input).

    Args:
        argv: arguments without the program name; ``sys.argv[1:]`` when ``None``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [JOHNSON]:
        return _main_johnson(argv[1:])
    if argv[:1] == [ADAIN]:
        return _main_adain(argv[1:])
    args = build_parser().parse_args(argv)

    def work():
        params, meta, report = read_vgg_file(args.src, args.arch, args.layout)
        return save(args.out, params, meta), meta, report

    done, status = _convert(args.out, [args.src], work)
    if status:
        return status
    out, meta, report = done
    print(report.summary())
    # A successful conversion has every tensor it needs; a missing one is an error above.
    print(_keys_line("missing keys", []))
    print(_keys_line("unexpected keys (dropped)", report.unexpected))
    print(f"wrote {out} ({meta['arch']}, input convention {meta['convention']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
