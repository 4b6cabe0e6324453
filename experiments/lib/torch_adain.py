"""The PyTorch AdaIN network in the layout of naoto0804/pytorch-AdaIN, for parity tests and
benchmarks against :mod:`jaxstyle.nets.adain` (written from the port's published definition).

``vgg_normalised`` is the whole 53-module VGG19 ``nn.Sequential`` (the port cuts it at relu4_1,
module 31, after loading); the decoder is its mirror, ending in a linear convolution.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _conv_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(cin, cout, (3, 3)), nn.ReLU()]


def adain_modules(seed: int = 0) -> tuple[nn.Sequential, nn.Sequential]:
    """``(vgg_normalised, decoder)`` with random He-scaled weights (eval mode)."""
    blocks = (
        ((3, 64), (64, 64)),
        ((64, 128), (128, 128)),
        ((128, 256),) + ((256, 256),) * 3,
        ((256, 512),) + ((512, 512),) * 3,
        ((512, 512),) * 4,
    )
    vgg: list[nn.Module] = [nn.Conv2d(3, 3, (1, 1))]
    for b, block in enumerate(blocks):
        if b:
            vgg.append(nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True))
        for cin, cout in block:
            vgg += _conv_relu(cin, cout)

    def up() -> nn.Module:
        return nn.Upsample(scale_factor=2, mode="nearest")

    dec = [*_conv_relu(512, 256), up(), *_conv_relu(256, 256), *_conv_relu(256, 256)]
    dec += [*_conv_relu(256, 256), *_conv_relu(256, 128), up(), *_conv_relu(128, 128)]
    dec += [*_conv_relu(128, 64), up(), *_conv_relu(64, 64)]
    dec += [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(64, 3, (3, 3))]
    vgg_m, dec_m = nn.Sequential(*vgg), nn.Sequential(*dec)
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in [*vgg_m, *dec_m]:
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0, (2.0 / m.weight[0].numel()) ** 0.5)
                m.bias.uniform_(-0.05, 0.05)
    return vgg_m.eval(), dec_m.eval()


def _mean_std(f: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    n, c = f.shape[:2]
    var = f.reshape(n, c, -1).var(dim=2) + eps  # unbiased, as the port's calc_mean_std
    return f.reshape(n, c, -1).mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)


def adain(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    cm, cs = _mean_std(content)
    sm, ss = _mean_std(style)
    return (content - cm) / cs * ss + sm


def to_nchw(image: np.ndarray) -> torch.Tensor:
    """HWC (or NHWC) float32 -> NCHW."""
    x = image if image.ndim == 4 else image[None]
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def style_transfer(vgg, decoder, content, styles, alpha=1.0, weights=None) -> torch.Tensor:
    """The port's ``style_transfer`` with interpolation weights: NCHW in, the decoder's NCHW
    output out (not clipped, not cropped: up to 7 px larger when a side is not a multiple of 8).
    """
    enc = vgg[:31]  # up to relu4_1
    w = np.ones(len(styles)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    with torch.no_grad():
        fc = enc(content)
        feat = sum(float(wi) * adain(fc, enc(s)) for wi, s in zip(w, styles, strict=True))
        return decoder(alpha * feat + (1 - alpha) * fc)
