"""MobileFaceNet (insightface "y1" layout): depthwise-separable bottlenecks and a global depthwise conv.

conv3×3 s2 64 → dw3×3 64 → [bottleneck s2 → residual bottlenecks] ×3 stages (64/128/128 channels, 4/6/2
residual blocks, expansion 2/2/4 at the downsampling blocks) → conv1×1 512 → global depthwise conv (linear)
→ flatten → embedding head (the GDC's BatchNorm runs on the flattened ``(N, 512)``: see ``conv_bn``). About 1.2 M parameters with a 512-d head.
"""
from mxnet import gluon
from mxnet.gluon import nn

from gluonface.errors import GluonFaceError
from gluonface.models import register_model
from gluonface.models.layers import FaceNet, conv_bn


class Bottleneck(gluon.HybridBlock):
    """conv1×1 expand → dw3×3 (stride) → conv1×1 project (linear); identity shortcut when shapes match."""

    def __init__(self, channels, expanded, stride, residual, **kwargs):
        super().__init__(**kwargs)
        self.residual = residual
        with self.name_scope():
            self.body = nn.HybridSequential(prefix="")
            self.body.add(conv_bn(expanded, 1, act=True),
                          conv_bn(expanded, 3, stride, 1, groups=expanded, act=True),
                          conv_bn(channels, 1, act=False))

    def hybrid_forward(self, F, x):
        y = self.body(x)
        return y + x if self.residual else y


def _stage(features, channels, down_expanded, blocks, expanded):
    features.add(Bottleneck(channels, down_expanded, 2, residual=False))
    for _ in range(blocks):
        features.add(Bottleneck(channels, expanded, 1, residual=True))


def _final_map_size(input_size):
    size = int(input_size)
    for _ in range(4):  # four stride-2 3×3 convs with padding 1
        size = (size - 1) // 2 + 1
    return size


@register_model("mobilefacenet")
def mobilefacenet(embedding_size, head, dropout, input_norm, input_size=112, **kw):
    """MobileFaceNet for square ``input_size`` inputs (the global depthwise kernel equals the final map)."""
    if kw:
        raise GluonFaceError(f"mobilefacenet takes only input_size, not {sorted(kw)}; fix: remove them")
    features = nn.HybridSequential(prefix="")
    features.add(conv_bn(64, 3, 2, 1, act=True),
                 conv_bn(64, 3, 1, 1, groups=64, act=True))
    _stage(features, 64, 128, 4, 128)
    _stage(features, 128, 256, 6, 256)
    _stage(features, 128, 512, 2, 256)
    k = _final_map_size(input_size)
    features.add(conv_bn(512, 1, act=True),
                 conv_bn(512, k, 1, 0, groups=512, act=False, flatten=True))  # global depthwise conv (GDC)
    return FaceNet(features, embedding_size, head, dropout, input_norm, prefix="mobilefacenet_")
