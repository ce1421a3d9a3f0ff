"""Parameter and multiply-accumulate (MAC) counts of a network, measured by running it once.

MACs count convolutions and dense layers only (``Cout · Hout · Wout · Cin/groups · kh · kw`` and
``in · out`` per sample), the convention of ptflops and of insightface's published iresnet figures
(insightface's MXNet ``flops_counter`` reports 2 × MACs). BN, activations and additions are not counted.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModelCost:
    """``params``: trainable + auxiliary parameter elements; ``macs``: per sample at ``size``×``size``."""
    name: str
    size: int
    params: int
    macs: int
    embedding_shape: tuple


def _leaf_layers(block):
    from mxnet.gluon import nn
    from gluonface.models.layers import ChannelPReLU
    stack = [block]
    while stack:
        b = stack.pop()
        if isinstance(b, (nn.Conv2D, nn.Dense, ChannelPReLU)):
            yield b
        stack.extend(b._children.values())


def count_macs(net, size=112):
    """Run ``net`` imperatively on one ``(1, 3, size, size)`` input and sum conv/dense MACs.

    Args:
        net: an initialised Gluon network (hybridized or not; it is run imperatively).
        size: input height and width.

    Returns:
        ``(macs, embedding_shape)``: int MACs per sample and the output shape tuple.
    """
    import mxnet as mx
    from mxnet.gluon import nn
    net.hybridize(False)
    total = []
    handles = []

    def hook(block, inputs, output):
        if not isinstance(block, (nn.Conv2D, nn.Dense)):
            return  # ChannelPReLU's internal depthwise conv is an activation, not a counted layer
        w = block.weight.shape
        if isinstance(block, nn.Dense):
            total.append(int(w[0]) * int(w[1]))
        else:
            # weight (Cout, Cin/groups, kh, kw); output (1, Cout, Hout, Wout)
            total.append(int(np.prod(output.shape[1:])) * int(np.prod(w[1:])))

    for layer in _leaf_layers(net):
        handles.append(layer.register_forward_hook(hook))
    try:
        out = net(mx.nd.zeros((1, 3, size, size)))
    finally:
        for h in handles:
            h.detach()
    return sum(total), tuple(out.shape)


def count_params(net):
    """Number of parameter elements (weights, biases, BN statistics) of an initialised network."""
    return int(sum(np.prod(p.shape) for p in net.collect_params().values()))


def model_cost(name, size=112, embedding_size=512):
    """Build ``name`` with ``get_model``, initialise it and return its ``ModelCost`` at ``size``×``size``."""
    import mxnet as mx
    from gluonface.models import get_model
    kw = {"input_size": size} if name == "mobilefacenet" else {}
    net = get_model(name, embedding_size=embedding_size, **kw)
    net.initialize(mx.init.Xavier())
    macs, shape = count_macs(net, size)  # the first forward also finishes deferred shape inference
    return ModelCost(name, size, count_params(net), macs, shape)
