"""``python -m weights_convert``: a command line over :mod:`jaxstyle.weights`.

The readers, layout tables and converters live in the library (:mod:`jaxstyle.weights.readers`
for VGG, :mod:`jaxstyle.weights.johnson` for fast_neural_style networks); this package only
parses flags, refuses unsafe outputs, and reports. The names below are kept for callers that
imported them from here.
"""

from jaxstyle.weights.readers import (
    ConvertError,
    ConvertReport,
    convert_tensors,
    detect_layout,
    read_tensors,
    read_vgg_file,
)

__all__ = [
    "ConvertError",
    "ConvertReport",
    "convert_tensors",
    "detect_layout",
    "read_tensors",
    "read_vgg_file",
]
