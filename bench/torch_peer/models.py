"""PyTorch peers of gluonface's iresnet50 and MobileFaceNet, written for the benchmark only.

Same layer sequence, widths, PReLU per channel, BN eps 2e-5, in-graph (x − 127.5)/128 and the 'FC' head
(BN → Linear → BN with fixed gamma) as gluonface/models. Runs only in bench/.venv-torch (torch next to gluoncv
breaks ``import gluoncv``), never imported by the package.
"""
import torch
from torch import nn

EPS = 2e-5


def conv_bn(cin, cout, k, stride=1, pad=0, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False), nn.BatchNorm2d(cout, eps=EPS)]
    if act:
        layers.append(nn.PReLU(cout, init=0.25))
    return nn.Sequential(*layers)


class IRUnit(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin, eps=EPS), conv_bn(cin, cout, 3, 1, 1),
                                  conv_bn(cout, cout, 3, stride, 1, act=False))
        self.short = conv_bn(cin, cout, 1, stride, 0, act=False) if stride != 1 or cin != cout else None

    def forward(self, x):
        return self.body(x) + (x if self.short is None else self.short(x))


class Bottleneck(nn.Module):
    def __init__(self, cin, cout, expanded, stride, residual):
        super().__init__()
        self.residual = residual
        self.body = nn.Sequential(conv_bn(cin, expanded, 1), conv_bn(expanded, expanded, 3, stride, 1, expanded),
                                  conv_bn(expanded, cout, 1, act=False))

    def forward(self, x):
        y = self.body(x)
        return y + x if self.residual else y


class Head(nn.Module):
    def __init__(self, flat, emb):
        super().__init__()
        self.bn_in = nn.BatchNorm2d(flat[0], eps=EPS)
        self.fc = nn.Linear(flat[0] * flat[1] * flat[2], emb)
        self.bn_out = nn.BatchNorm1d(emb, eps=EPS)
        self.bn_out.weight.requires_grad_(False)  # fixed gamma, as gluonface's scale=False BN

    def forward(self, x):
        return self.bn_out(self.fc(torch.flatten(self.bn_in(x), 1)))


class FaceNet(nn.Module):
    def __init__(self, features, flat, emb=512):
        super().__init__()
        self.features = features
        self.head = Head(flat, emb)

    def forward(self, x):
        return self.head(self.features((x - 127.5) * 0.0078125))


def iresnet50(emb=512):
    layers = [conv_bn(3, 64, 3, 1, 1)]
    cin = 64
    for n, w in zip([3, 4, 14, 3], [64, 128, 256, 512]):
        for i in range(n):
            layers.append(IRUnit(cin, w, 2 if i == 0 else 1))
            cin = w
    return FaceNet(nn.Sequential(*layers), (512, 7, 7), emb)


def mobilefacenet(emb=512):
    layers = [conv_bn(3, 64, 3, 2, 1), conv_bn(64, 64, 3, 1, 1, groups=64)]
    cin = 64
    for cout, down_exp, blocks, exp in [(64, 128, 4, 128), (128, 256, 6, 256), (128, 512, 2, 256)]:
        layers.append(Bottleneck(cin, cout, down_exp, 2, False))
        layers += [Bottleneck(cout, cout, exp, 1, True) for _ in range(blocks)]
        cin = cout
    layers += [conv_bn(128, 512, 1), conv_bn(512, 512, 7, 1, 0, groups=512, act=False)]
    return FaceNet(nn.Sequential(*layers), (512, 1, 1), emb)


MODELS = {"iresnet50": iresnet50, "mobilefacenet": mobilefacenet}
