"""PyTorch counterparts of jaxstyle's VGG features and Gatys losses, for side-by-side benchmarks.

Same weights (copied from a jaxstyle ``VGGNet``), same input convention, same layer names and the
same loss definitions as ``jaxstyle.losses``; used only by the scripts in ``experiments/``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from jaxstyle.nets.vgg import CAFFE_MEAN_BGR, TORCHVISION_MEAN, TORCHVISION_STD, layer_names


class TorchVGG(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.arch, self.pooling, self.convention = net.arch, net.pooling, net.convention
        self.convs = torch.nn.ModuleDict()
        for name, p in net.params.items():
            k = np.asarray(p["kernel"])
            conv = torch.nn.Conv2d(k.shape[2], k.shape[3], 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(k.transpose(3, 2, 0, 1).copy()))
                conv.bias.copy_(torch.from_numpy(np.asarray(p["bias"]).copy()))
            conv.requires_grad_(False)
            self.convs[name] = conv

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """NCHW RGB in [0, 1] -> the weights' convention."""
        if self.convention == "caffe":
            mean = torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
            return x.flip(1) * 255.0 - mean
        mean = torch.tensor(TORCHVISION_MEAN).view(1, 3, 1, 1)
        return (x - mean) / torch.tensor(TORCHVISION_STD).view(1, 3, 1, 1)

    def features(self, x: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        wanted = set(layers)
        order = layer_names(self.arch)
        last = max(order.index(n) for n in wanted)
        h, out = self.preprocess(x), {}
        for name in order[: last + 1]:
            if name.startswith("conv"):
                h = self.convs[name](h)
            elif name.startswith("relu"):
                h = torch.relu(h)
            elif self.pooling == "max":
                h = F.max_pool2d(h, 2)
            else:
                h = F.avg_pool2d(h, 2)
            if name in wanted:
                out[name] = h
        return out


def gram(f: torch.Tensor) -> torch.Tensor:
    n, c, h, w = f.shape
    f = f.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def tv(x: torch.Tensor) -> torch.Tensor:
    dx = x[..., :, 1:] - x[..., :, :-1]
    dy = x[..., 1:, :] - x[..., :-1, :]
    return (dx.pow(2).sum() + dy.pow(2).sum()) / (dx.numel() + dy.numel())


def gatys_objective(vgg: TorchVGG, content: torch.Tensor, style: torch.Tensor, cfg):
    """Returns ``loss(x) -> (total, terms)`` with the same definitions as jaxstyle.losses."""
    c_layers, s_layers = tuple(cfg.content_layers), tuple(cfg.style_layers)
    with torch.no_grad():
        c_t = vgg.features(content, c_layers)
        s_t = {k: gram(v) for k, v in vgg.features(style, s_layers).items()}
    layers = tuple(dict.fromkeys(c_layers + s_layers))

    def loss(x: torch.Tensor):
        f = vgg.features(x, layers)
        c = sum((f[n] - c_t[n]).pow(2).mean() for n in c_layers)
        s = sum((gram(f[n]) - s_t[n]).pow(2).mean() for n in s_layers)
        t = tv(x)
        total = cfg.content_weight * c + cfg.style_weight * s + cfg.tv_weight * t
        return total, {
            "content": float(c.detach()),
            "style": float(s.detach()),
            "tv": float(t.detach()),
        }

    return loss


def to_torch(image: np.ndarray) -> torch.Tensor:
    """HWC float image -> NCHW tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float()


def transformer_net_class(num_styles: int = 1):
    """The ``TransformerNet`` class of pytorch/examples fast_neural_style, layer for layer.

    With ``num_styles`` > 1, every instance norm is conditional (Dumoulin et al. 2017): a
    (gamma, beta) row per style, weighted per image by the ``style`` (N, S) tensor given to
    ``forward`` (jaxstyle's multi-style network, in PyTorch).
    """
    shared: dict = {}

    class CondInstanceNorm(torch.nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.norm = torch.nn.InstanceNorm2d(channels, affine=False)
            self.scale = torch.nn.Parameter(torch.ones(num_styles, channels))
            self.bias = torch.nn.Parameter(torch.zeros(num_styles, channels))

        def forward(self, x):
            w = shared["style"]
            return (
                self.norm(x) * (w @ self.scale)[:, :, None, None]
                + (w @ self.bias)[:, :, None, None]
            )

    def norm(channels):
        if num_styles == 1:
            return torch.nn.InstanceNorm2d(channels, affine=True)
        return CondInstanceNorm(channels)

    class ConvLayer(torch.nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride):
            super().__init__()
            self.reflection_pad = torch.nn.ReflectionPad2d(kernel_size // 2)
            self.conv2d = torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride)

        def forward(self, x):
            return self.conv2d(self.reflection_pad(x))

    class ResidualBlock(torch.nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
            self.in1 = norm(channels)
            self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
            self.in2 = norm(channels)
            self.relu = torch.nn.ReLU()

        def forward(self, x):
            residual = x
            out = self.relu(self.in1(self.conv1(x)))
            out = self.in2(self.conv2(out))
            return out + residual

    class UpsampleConvLayer(torch.nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride, upsample=None):
            super().__init__()
            self.upsample = upsample
            self.reflection_pad = torch.nn.ReflectionPad2d(kernel_size // 2)
            self.conv2d = torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride)

        def forward(self, x):
            x_in = x
            if self.upsample:
                x_in = torch.nn.functional.interpolate(
                    x_in, mode="nearest", scale_factor=self.upsample
                )
            return self.conv2d(self.reflection_pad(x_in))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = ConvLayer(3, 32, kernel_size=9, stride=1)
            self.in1 = norm(32)
            self.conv2 = ConvLayer(32, 64, kernel_size=3, stride=2)
            self.in2 = norm(64)
            self.conv3 = ConvLayer(64, 128, kernel_size=3, stride=2)
            self.in3 = norm(128)
            self.res1 = ResidualBlock(128)
            self.res2 = ResidualBlock(128)
            self.res3 = ResidualBlock(128)
            self.res4 = ResidualBlock(128)
            self.res5 = ResidualBlock(128)
            self.deconv1 = UpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
            self.in4 = norm(64)
            self.deconv2 = UpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
            self.in5 = norm(32)
            self.deconv3 = ConvLayer(32, 3, kernel_size=9, stride=1)
            self.relu = torch.nn.ReLU()

        def forward(self, X, style=None):  # noqa: N803 - the example's spelling
            shared["style"] = style
            y = self.relu(self.in1(self.conv1(X)))
            y = self.relu(self.in2(self.conv2(y)))
            y = self.relu(self.in3(self.conv3(y)))
            y = self.res1(y)
            y = self.res2(y)
            y = self.res3(y)
            y = self.res4(y)
            y = self.res5(y)
            y = self.relu(self.in4(self.deconv1(y)))
            y = self.relu(self.in5(self.deconv2(y)))
            y = self.deconv3(y)
            return y

    return Net
