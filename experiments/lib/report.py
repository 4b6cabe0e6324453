"""The report's settings, and its loss weights mapped to jaxstyle's.

Mapping the report's loss weights to jaxstyle's (:func:`weight_scale`)
------------------------------------------------------------------------
Li & Zhao state their losses as ``C_W * content + S_W * style`` with content and style the
``MSELoss`` of features and of Gram matrices ``G = F F^T / (a*b*c*d)`` (their section 5.1, the
PyTorch tutorial's ``GramMatrix``), taken at ``conv`` layers of torchvision's VGG19, fed RGB in
[0, 1] *without* the ImageNet mean/std normalisation the network was trained with (section 5.1:
"we had to normalize the pixel values of our input images to [0,1]"; the tutorial of that time
had no ``Normalization`` layer). jaxstyle uses the same Gram normalisation and the same means,
but features of inputs in the weights' own convention (Caffe VGG16: BGR, 0-255, mean-subtracted),
whose activations are on another scale. No closed form relates the two, so the factor is
measured: ``k = (S_rep / C_rep) / (S_ours / C_ours)``, the ratio of style to content loss at the
same starting image (uniform noise, seeded; a content initialisation has no content loss) under
the report's input handling and under ours, on our VGG network. Our weight is then
``k * S_W`` ("linear"), giving the two terms the same balance at initialisation as the
report's weight gave in the report's units.

The report's input handling is emulated on our network: feeding a torchvision-trained network
raw [0, 1] RGB means it sees ``x`` where it expects ``(x - mean) / std``; a Caffe-trained network
sees ``255 * std * t`` for a torchvision-unit input ``t``, so it is given ``255 * std * x`` (BGR,
no mean subtracted). This assumes the Caffe and torchvision networks agree up to that change of
input units, and it uses our VGG16 in place of their VGG19 (VGG19 weights are not cached).

``--weight-map squared``: the tutorial code the report took its ``GramMatrix`` from multiplied
features *and* targets by the weight inside the ``MSELoss``, so its effective weight was
``S_W**2`` (its default 1000 became the current tutorial's 1e6); the report's formula says
``S_W``, which is the default here.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

#: The content/style pairs used by default (one per row of the report's Figures 3-6).
DEFAULT_PAIRS = (
    ("tubingen", "starry_night"),
    ("golden_gate", "the_scream"),
    ("amber", "mosaic"),
    ("hoovertowernight", "udnie"),
)
#: The report's settings of Figures 3-6 (section 6.1).
REPORT_CONTENT_LAYERS = ("conv4_2",)
REPORT_STYLE_LAYERS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2")
#: torch.optim.LBFGS's default ``max_iter``: inner iterations per ``optimizer.step()``.
TORCH_LBFGS_MAX_ITER = 20
REPORT_ITERATIONS_NOTE = (
    "The report's 'iterations' are most likely calls of torch.optim.LBFGS.step() (its Figure 26 "
    "x-axis passes 500 for a 50-iteration run, and it says the optimizer 'does many rounds of "
    f"optimization for every step'); each runs up to {TORCH_LBFGS_MAX_ITER} L-BFGS iterations "
    "by default, so the report's Ite=15 is up to 300 of our iterations (one function evaluation "
    "each)."
)


def report_input(net, images):
    """``images`` (NHWC [0,1] RGB) as the report's network saw them, in ``net``'s input units.

    See the module docstring: raw [0, 1] RGB given to a network trained on mean/std-normalised
    inputs, mapped to a Caffe-convention network as ``255 * std * x`` in BGR order.
    """
    import jax.numpy as jnp

    from jaxstyle.nets.vgg import TORCHVISION_STD

    if net.convention == "torchvision":
        return images
    return images[..., ::-1] * 255.0 * jnp.asarray(TORCHVISION_STD[::-1], images.dtype)


def loss_terms(net, x, content, style, content_layers, style_layers, *, report: bool):
    """``(content, style)`` losses of image ``x`` (jaxstyle's definitions, unit weights)."""
    import jax.numpy as jnp

    from jaxstyle import losses
    from jaxstyle.nets.vgg import VGG

    def feats(img, layers):
        img = jnp.asarray(img)[None]
        if not report:
            return net.features(img, layers)
        vgg = VGG(arch=net.arch, pooling=net.pooling)
        return vgg.apply({"params": net.params}, report_input(net, img), tuple(layers))

    fx = feats(x, tuple(dict.fromkeys(tuple(content_layers) + tuple(style_layers))))
    fc, fs = feats(content, content_layers), feats(style, style_layers)
    c = sum(float(losses.content_loss(fx[n], fc[n])[0]) for n in content_layers)
    s = sum(
        float(losses.style_loss(losses.gram(fx[n]), losses.gram(fs[n]))[0]) for n in style_layers
    )
    return c, s


def weight_scale(net, pairs, content_layers, style_layers, seed: int = 0) -> dict[str, Any]:
    """The factor ``k`` from the report's style weights to ours (module docstring).

    Args:
        net: the VGG network (with the pooling the run uses).
        pairs: ``[(name, content image, style image)]`` at the run's size.

    Returns:
        ``{"k": geometric mean over the pairs, "per_pair": [{pair, k, losses...}]}``.
    """
    import jax

    rows = []
    for i, (name, content, style) in enumerate(pairs):
        x0 = np.asarray(jax.random.uniform(jax.random.PRNGKey(seed + i), content.shape))
        c_o, s_o = loss_terms(net, x0, content, style, content_layers, style_layers, report=False)
        c_r, s_r = loss_terms(net, x0, content, style, content_layers, style_layers, report=True)
        k = (s_r / c_r) / (s_o / c_o)
        rows.append(
            {
                "pair": name,
                "k": k,
                "content_ours": c_o,
                "style_ours": s_o,
                "content_report_units": c_r,
                "style_report_units": s_r,
            }
        )
    k = float(np.exp(np.mean(np.log([r["k"] for r in rows]))))
    return {"k": k, "per_pair": rows}


def map_weight(report_weight: float, k: float, mode: str = "linear") -> float:
    """Our style weight for the report's ``report_weight`` (3 significant digits)."""
    w = report_weight**2 if mode == "squared" else report_weight
    return float(f"{k * w:.3g}")


def add_mapping_flags(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--scale",
        type=float,
        default=0.0,
        help="our style weight per unit of the report's (0: measure it; see lib/report.py)",
    )
    ap.add_argument(
        "--weight-map",
        default="linear",
        choices=("linear", "squared"),
        help="report weight S_W enters as S_W (its formula) or S_W**2 (its tutorial code)",
    )


def scale_for(args, net, pairs, content_layers, style_layers) -> dict[str, Any]:
    """``--scale`` if given, else :func:`weight_scale`."""
    if args.scale > 0:
        return {"k": args.scale, "per_pair": [], "given": True}
    return {**weight_scale(net, pairs, content_layers, style_layers, args.seed), "given": False}


MAPPING_NOTE = (
    "Report weights are mapped to ours as `ours = k * report` (`k * report**2` with "
    "`--weight-map squared`), where k = (style/content loss ratio at a uniform-noise image under "
    "the report's input handling) / (the same ratio under ours), measured on our VGG network. "
    "The report fed RGB in [0,1] without mean/std normalisation to VGG19; we emulate that on "
    "our network (see experiments/lib/report.py); `--scale K` sets k directly."
)
