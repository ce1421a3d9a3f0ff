"""Improved residual networks (insightface "IR" units): iresnet18/34/50/100/200 and a tiny CPU variant.

Unit: BN → conv3×3 s1 → BN → PReLU → conv3×3 (stride) → BN, plus a conv1×1 (stride) + BN shortcut when the
shape changes; no activation after the addition. Stem conv3×3 s1 + BN + PReLU, no max-pool; every stage
starts with a stride-2 unit, so a 112×112 input ends as a 7×7 map.
"""
from mxnet import gluon
from mxnet.gluon import nn

from gluonface.models import register_model
from gluonface.models.layers import BN_EPS, FaceNet, conv_bn


class IRUnit(gluon.HybridBlock):
    """One improved residual unit. ``(N, C_in, H, W) → (N, channels, ⌈H/stride⌉, ⌈W/stride⌉)``."""

    def __init__(self, channels, stride, in_channels, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.body = nn.HybridSequential(prefix="")
            self.body.add(nn.BatchNorm(epsilon=BN_EPS),
                          conv_bn(channels, 3, 1, 1, act=True),
                          conv_bn(channels, 3, stride, 1, act=False))
            self.shortcut = None
            if stride != 1 or in_channels != channels:
                self.shortcut = conv_bn(channels, 1, stride, 0, act=False)

    def hybrid_forward(self, F, x):
        short = x if self.shortcut is None else self.shortcut(x)
        return self.body(x) + short


def iresnet_features(units, widths, stem_channels=64, stem_stride=1):
    """The IResNet trunk: stem and one stride-2 stage per entry of ``units``/``widths``."""
    features = nn.HybridSequential(prefix="")
    features.add(conv_bn(stem_channels, 3, stem_stride, 1, act=True))
    in_ch = stem_channels
    for n, width in zip(units, widths):
        for i in range(n):
            features.add(IRUnit(width, 2 if i == 0 else 1, in_ch))
            in_ch = width
    return features


_DEPTHS = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 14, 3],
    100: [3, 13, 30, 3],
    200: [6, 26, 60, 6],
}


def _make_factory(depth):
    def factory(embedding_size, head, dropout, input_norm, input_size=112, **kw):
        _reject_unknown(kw, f"iresnet{depth}")
        features = iresnet_features(_DEPTHS[depth], [64, 128, 256, 512])
        return FaceNet(features, embedding_size, head, dropout, input_norm, prefix=f"iresnet{depth}_")
    factory.__doc__ = f"IResNet-{depth}: units per stage {_DEPTHS[depth]}, widths 64/128/256/512."
    return factory


for _depth in _DEPTHS:
    register_model(f"iresnet{_depth}")(_make_factory(_depth))


@register_model("iresnet_tiny")
def iresnet_tiny(embedding_size, head, dropout, input_norm, input_size=112, **kw):
    """A deliberately small IR network (~1.7 M parameters, ~8 M MACs at 112×112) for CPU checks and demos.

    2×2 average pooling of the input, stem conv3×3 stride 2 (16 channels), then IR units of 16 (s2),
    32 (s2) and 64 (s1) channels: 112×112 → 7×7×64 → embedding head.
    """
    _reject_unknown(kw, "iresnet_tiny")
    features = nn.HybridSequential(prefix="")
    features.add(nn.AvgPool2D(2))  # halves the resolution before any convolution: most of the saving
    features.add(iresnet_features([1, 1], [16, 32], stem_channels=16, stem_stride=2))
    features.add(IRUnit(64, 1, 32))
    return FaceNet(features, embedding_size, head, dropout, input_norm, prefix="iresnet_tiny_")


def _reject_unknown(kw, name):
    if kw:
        from gluonface.errors import GluonFaceError
        raise GluonFaceError(f"{name} takes no options {sorted(kw)}; fix: remove them from the model config")
