"""Converters from other frameworks' VGG (and Johnson network) weights into jaxstyle's format.

Each reader is a name table, one transpose rule, a shape assertion per tensor, and a report of
missing and unexpected keys. Classifier layers are dropped. See :mod:`weights_convert.vgg`.
"""

from weights_convert.vgg import (
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
