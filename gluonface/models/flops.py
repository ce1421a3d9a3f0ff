"""Parameter and multiply-accumulate (MAC) counts of a network, read from its symbolic graph.

Nothing is computed or even initialised: the network is traced once to a symbol and MXNet's shape inference
gives every layer's weight and output shape, so counting iresnet200 takes a fraction of a second.
MACs count convolutions and dense layers only (``Cout · Hout · Wout · Cin/groups · kh · kw`` and ``in · out``
per sample), the convention of ptflops and of the published iresnet figures (insightface's MXNet
``flops_counter`` reports 2 × MACs). BN, activations and additions are not counted.
"""
import json
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModelCost:
    """``params``: parameter elements incl. BN running statistics; ``macs``: per sample at ``size``²."""
    name: str
    size: int
    params: int
    macs: int
    embedding_shape: tuple


def graph_cost(net, input_shape):
    """Count parameters and conv/dense MACs of ``net`` for one input of ``input_shape``.

    Args:
        net: a Gluon ``HybridBlock`` (initialised or not).
        input_shape: ``(N, 3, H, W)``; MACs are returned per sample (divided by N).

    Returns:
        ``(params, macs_per_sample, output_shape)``.
    """
    import mxnet as mx
    sym = net(mx.sym.var("data"))
    internals = sym.get_internals()
    arg_shapes, out_shapes, aux_shapes = internals.infer_shape(data=tuple(input_shape))
    if arg_shapes is None:
        raise ValueError(f"shape inference failed for input {input_shape}")
    arg_shape = dict(zip(internals.list_arguments(), arg_shapes))
    out_shape = dict(zip(internals.list_outputs(), out_shapes))
    nodes = json.loads(sym.tojson())["nodes"]
    macs = 0
    for node in nodes:
        if node["op"] not in ("Convolution", "FullyConnected"):
            continue
        weight_node = nodes[node["inputs"][1][0]]
        if weight_node["op"] != "null":
            # ChannelPReLU implements the activation as a depthwise conv whose weight is computed
            # (alpha − 1): an activation, not a counted layer.
            continue
        w = arg_shape[weight_node["name"]]
        out = out_shape[node["name"] + "_output"]
        per_batch = (int(np.prod(out[1:])) * int(np.prod(w[1:])) * out[0] if node["op"] == "Convolution"
                     else int(w[0]) * int(w[1]) * out[0])
        macs += per_batch
    params = sum(int(np.prod(s)) for n, s in arg_shape.items() if n != "data")
    params += sum(int(np.prod(s)) for s in aux_shapes)
    n = input_shape[0]
    return params, macs // n, tuple(sym.infer_shape(data=tuple(input_shape))[1][0])


def model_cost(name, size=112, embedding_size=512):
    """``ModelCost`` of ``get_model(name, embedding_size)`` at ``size``×``size`` (nothing is run)."""
    from gluonface.models import get_model
    net = get_model(name, embedding_size=embedding_size, input_size=size)
    params, macs, shape = graph_cost(net, (1, 3, size, size))
    return ModelCost(name, size, params, macs, shape)
