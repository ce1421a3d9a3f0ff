"""Building blocks shared by the face backbones: conv+BN(+PReLU), the embedding head and the wrapper net."""
import mxnet as mx
from mxnet import gluon
from mxnet.gluon import nn

# insightface's MXNet models use these BatchNorm settings; momentum 0.9 is Gluon's default.
BN_EPS = 2e-5


def conv_bn(channels, kernel, stride=1, pad=0, groups=1, act=True, flatten=False):
    """Conv (no bias) → BatchNorm → optional per-channel PReLU, as one HybridSequential.

    ``flatten=True`` is for a convolution whose output map is 1×1 (MobileFaceNet's global depthwise conv):
    the ``(N, C, 1, 1)`` output is flattened to ``(N, C)`` *before* the BatchNorm, which normalises the same
    C channels. Why: MXNet 1.9.1 caches its oneDNN BatchNorm primitives per thread under a key that does not
    tell a channels-last ``(N, C, 1, 1)`` input (what oneDNN's AVX-512 convolutions emit) from a 2-D
    ``(N, C)`` input, which it reshapes to ``(N, C, 1, 1)``. A later 2-D BatchNorm of the same N and C (the
    embedding head's) then gets the channels-last primitive, cannot create its output memory and the process
    dies with a segmentation fault. AVX2 convolutions emit a blocked layout whose key differs, so only
    AVX-512 CPUs crash. A BatchNorm never sees a 1×1 map in gluonface's networks.
    """
    seq = nn.HybridSequential(prefix="")
    seq.add(nn.Conv2D(channels, kernel, stride, pad, groups=groups, use_bias=False))
    if flatten:
        seq.add(nn.Flatten())
    seq.add(nn.BatchNorm(epsilon=BN_EPS))
    if act:
        seq.add(ChannelPReLU(channels))
    return seq


class ChannelPReLU(gluon.HybridBlock):
    """Per-channel PReLU ``y = max(x, 0) + alpha_c · min(x, 0)`` on ``(N, C, H, W)``; ``alpha`` is ``(C, 1, 1, 1)``.

    Computed as ``x + conv1x1_depthwise(min(x, 0), alpha − 1)``. Why: MXNet 1.9.1's CPU ``LeakyReLU``
    (act_type='prelu') backward reduces the slope gradient with a slow generic kernel, ~20× slower than this
    form (0.8 s vs 0.04 s for a (64, 16, 56, 56) forward+backward on 2 cores), where oneDNN's depthwise
    convolution computes the same reduction. Slopes start at 0.25 like ``nn.PReLU``.
    """

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        with self.name_scope():
            self.alpha = self.params.get("alpha", shape=(channels, 1, 1, 1), init=mx.init.Constant(0.25))

    def hybrid_forward(self, F, x, alpha):
        neg = F.Convolution(F.minimum(x, 0.0), alpha - 1.0, kernel=(1, 1), num_filter=self.channels,
                            num_group=self.channels, no_bias=True)
        return x + neg


class EmbeddingHead(gluon.HybridBlock):
    """insightface's 'E' / 'FC' output: BN → Dropout → Dense(E) → BN(fixed gamma).

    Input ``(N, C, h, w)`` float feature maps; Dense infers ``C·h·w`` at the first forward, so the same head
    works for any input size. Output ``(N, E)``.
    """

    def __init__(self, embedding_size, kind="E", dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.bn_in = nn.BatchNorm(epsilon=BN_EPS)
            self.dropout = nn.Dropout(dropout) if kind == "E" and dropout > 0 else None
            self.fc = nn.Dense(embedding_size)
            # The final BN has gamma fixed to 1 (insightface 'fc1' layer): it only centres and scales.
            self.bn_out = nn.BatchNorm(epsilon=BN_EPS, scale=False)

    def hybrid_forward(self, F, x):
        x = self.bn_in(x)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.bn_out(self.fc(x))


class FaceNet(gluon.HybridBlock):
    """Input normalisation → backbone ``features`` → ``EmbeddingHead``.

    ``(N, 3, H, W)`` float32 raw pixels → ``(N, E)`` float32 embedding (not L2-normalised).
    """

    def __init__(self, features, embedding_size, head="E", dropout=0.0, input_norm=True, **kwargs):
        super().__init__(**kwargs)
        self.input_norm = input_norm
        with self.name_scope():
            self.features = features
            self.output = EmbeddingHead(embedding_size, head, dropout)

    def hybrid_forward(self, F, x):
        if self.input_norm:
            # 0.0078125 == 1/128 exactly, so the normalisation is exact in float32 and bfloat16.
            x = (x - 127.5) * 0.0078125
        return self.output(self.features(x))
