"""gluoncv model-zoo classification backbones adapted to 112×112 faces (names ``gluoncv:<zoo name>``).

Adaptation: the stem's first stride-2 convolution becomes stride 1 so the trunk's total stride is 16
(112×112 → 7×7 instead of 4×4), the classifier and global pooling are dropped, a conv1×1 + BN + PReLU neck
reduces wide trunks to 512 channels (keeping the flatten-Dense head at insightface's size) and the usual
embedding head follows. Requires the ``zoo`` extra (gluoncv).
"""
from mxnet.gluon import nn

from gluonface.errors import GluonFaceError
from gluonface.models import register_model
from gluonface.models.layers import FaceNet, conv_bn

# zoo name → final trunk channels.
_RESNETS = {"resnet18_v1b": 512, "resnet34_v1b": 512, "resnet50_v1b": 2048, "resnet101_v1b": 2048}
_MOBILENETS = {"mobilenetv2_1.0": 1280, "mobilenetv2_0.5": 1280}
NECK_CHANNELS = 512


def _zoo_net(zoo_name):
    try:
        from gluoncv.model_zoo import get_model as zoo_get
    except ImportError as exc:
        raise GluonFaceError(f"gluoncv:{zoo_name} needs gluoncv ({exc}); "
                             "fix: pip install --no-deps gluoncv==0.10.5.post0") from exc
    return zoo_get(zoo_name, pretrained=False)


def _trunk(zoo_name):
    net = _zoo_net(zoo_name)
    trunk = nn.HybridSequential(prefix="")
    if zoo_name in _RESNETS:
        # ResNet-v1b: conv1 7×7 s2 + max-pool s2; the conv becomes stride 1, the max-pool stays.
        net.conv1._kwargs["stride"] = (1, 1)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            trunk.add(getattr(net, name))
    else:
        # MobileNetV2: features[0] is the stride-2 stem conv; the last child is the global pooling.
        net.features[0]._kwargs["stride"] = (1, 1)
        for block in list(net.features._children.values())[:-1]:
            trunk.add(block)
    return trunk


def _make_factory(zoo_name, channels):
    def factory(embedding_size, head, dropout, input_norm, input_size=112, **kw):
        if kw:
            raise GluonFaceError(f"gluoncv:{zoo_name} takes no options {sorted(kw)}; fix: remove them")
        features = nn.HybridSequential(prefix="")
        features.add(_trunk(zoo_name))
        if channels != NECK_CHANNELS:
            features.add(conv_bn(NECK_CHANNELS, 1, act=True))
        return FaceNet(features, embedding_size, head, dropout, input_norm,
                       prefix="gluoncv_" + zoo_name.replace(".", "_") + "_")
    factory.__doc__ = f"gluoncv {zoo_name} trunk adapted to 112×112 faces."
    return factory


for _name, _ch in {**_RESNETS, **_MOBILENETS}.items():
    register_model(f"gluoncv:{_name}")(_make_factory(_name, _ch))
