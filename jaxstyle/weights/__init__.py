"""VGG weights: the on-disk format, the readers of other frameworks' files, and the cache.

* :mod:`~jaxstyle.weights.format`: jaxstyle's safetensors format (save, load, metadata) and
  where the cache lives;
* :mod:`~jaxstyle.weights.readers`: ONNX, torch ``.pth``, safetensors and Keras ``.h5`` files,
  each through a layout table with a shape check per tensor (ONNX via
  :mod:`~jaxstyle.weights.onnx_proto`, which needs no ``onnx`` package); pytorch-AdaIN's
  ``vgg_normalised.pth`` is read as a VGG19 with the ``normalised`` input convention;
* :mod:`~jaxstyle.weights.johnson`: pytorch/examples fast_neural_style networks;
* :mod:`~jaxstyle.weights.adain`: the AdaIN encoder and decoder of the PyTorch port
  (``vgg_normalised.pth``, ``decoder.pth``);
* :mod:`~jaxstyle.weights.sources`: where weights are downloaded from, with pinned sha256;
* :mod:`~jaxstyle.weights.cache`: the cache (fetch, verify, list) and :func:`load_vgg`.

Dependencies point one way: ``cache -> sources -> readers -> format -> jaxstyle.nets.vgg``.
"""

from jaxstyle.weights.cache import (
    check_record,
    fetch,
    list_cached,
    load_or_fetch,
    load_vgg,
    record_path,
    verify,
)
from jaxstyle.weights.format import (
    FORMAT,
    WeightsError,
    cache_path,
    check_params,
    home,
    load,
    read_metadata,
    save,
    sha256_file,
    source_dir,
)
from jaxstyle.weights.readers import (
    LAYOUTS,
    ConvertError,
    ConvertReport,
    convert_tensors,
    read_tensors,
    read_vgg_file,
)
from jaxstyle.weights.sources import SOURCES, PipWheel, SafetensorsURL

__all__ = [
    "FORMAT",
    "LAYOUTS",
    "SOURCES",
    "ConvertError",
    "ConvertReport",
    "PipWheel",
    "SafetensorsURL",
    "WeightsError",
    "cache_path",
    "check_params",
    "check_record",
    "convert_tensors",
    "fetch",
    "home",
    "list_cached",
    "load",
    "load_or_fetch",
    "load_vgg",
    "read_metadata",
    "read_tensors",
    "read_vgg_file",
    "record_path",
    "save",
    "sha256_file",
    "source_dir",
    "verify",
]
