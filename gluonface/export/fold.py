"""Exact inference rewrites of an embedding symbol: fewer operators, the same embeddings.

A training graph carries operators that a frozen network does not need. ``fold_for_inference`` rewrites:
1. parameter arithmetic (ChannelPReLU's ``alpha - 1``) into constants;
2. gluonface's ChannelPReLU ``x + dwconv1x1(min(x, 0), alpha - 1)`` into one ``LeakyReLU(act_type='prelu')``
   (insightface's form; ONNX ``PRelu``);
3. Dropout (identity at inference) away;
4. BatchNorm into the Convolution / FullyConnected before it (also through the Flatten of a 1x1 map), and
   into a FullyConnected after it;
5. scalar input normalisation ``(x - 127.5) * 0.0078125`` plus a non-overlapping average pooling into one
   depthwise convolution with bias, a scalar affine map into any unpadded convolution after it, and a pure
   scalar scale into any convolution after it (padded or not: zero padding stays zero).
Each rewrite is a linear identity, so outputs change only by float32 rounding (~1e-7 relative). A
BatchNorm before a padded convolution stays: its shift would also reach the zero padding.

``lower_for_onednn`` then rewrites what oneDNN (MXNet's CPU backend) cannot run in its blocked layout:
a PReLU becomes ``x + dwconv1x1(relu(dwconv1x1(x, -1)), 1 - alpha)`` (LeakyReLU 'prelu' and ``minimum``
have no oneDNN kernel, so each one reordered the tensor to NCHW and back), a remaining BatchNorm a
depthwise 1x1 convolution with bias, and a dense layer on a 4-D input reads it through an explicit Flatten
(see ``_lower_dense_input``). The result is still a plain MXNet symbol.
"""
import numpy as np

from gluonface.export.graph import SymbolGraph, int_tuple

SCALAR_AFFINE = {  # op -> (a, c) of x -> a * x + c for its scalar s
    "_plus_scalar": lambda s: (1.0, s), "_minus_scalar": lambda s: (1.0, -s),
    "_rminus_scalar": lambda s: (-1.0, s), "_mul_scalar": lambda s: (s, 0.0),
    "_div_scalar": lambda s: (1.0 / s, 0.0),
}
_ADD = ("elemwise_add", "_plus", "_Plus")


def _bn_affine(g, i):
    """Per-channel (scale, shift) of BatchNorm node ``i`` at inference, or None when it cannot be folded."""
    node = g.nodes[i]
    values = [g.value(e) for e in node["inputs"][1:5]]
    if int(g.attr([i], "axis", 1)) != 1 or any(v is None for v in values):
        return None
    gamma, beta, mean, var = values
    if g.attr([i], "fix_gamma", "True") in ("True", "true", "1"):  # MXNet's default ignores gamma
        gamma = np.ones_like(gamma)
    scale = gamma / np.sqrt(var + float(g.attr([i], "eps", 1e-3)))
    return scale, beta - mean * scale


def _weight_bias(g, i):
    """(weight entry, weight, bias entry or None, bias) of Convolution / FullyConnected node ``i``."""
    inputs = g.nodes[i]["inputs"]
    w = g.value(inputs[1])
    has_bias = g.attr([i], "no_bias", "False") not in ("True", "true", "1")
    b = g.value(inputs[2]) if has_bias else np.zeros(len(w) if w is not None else 0)
    return inputs[1], w, (inputs[2] if has_bias else None), b


def _set_weight_bias(g, i, data, w_entry, w, b_entry, b):
    name = g.node(w_entry)["name"]
    bias_base = name[:-len("weight")] + "bias" if name.endswith("weight") else g.nodes[i]["name"] + "_bias"
    g.set_inputs(i, [data, g.param(w_entry, w, name), g.param(b_entry, b, bias_base)], no_bias=False)


def _through_flatten(g, i, entry):
    """(producer entry, its reader) for BatchNorm ``i``'s input: a Flatten of a 1x1 conv map is looked through
    (MobileFaceNet's global depthwise conv flattens before its BatchNorm, see ``models.layers.conv_bn``)."""
    if g.op(entry) == "Flatten" and g.only_user(entry) == i:
        inner = g.node(entry)["inputs"][0]
        shape = g.shape(inner)
        if g.op(inner) == "Convolution" and shape is not None and len(shape) == 4 and shape[2:] == (1, 1):
            return inner, entry[0]
    return entry, i


def _fold_bn_into_producer(g):
    """Convolution / FullyConnected (-> Flatten of a 1x1 map) -> BatchNorm: scale the weights, shift the bias."""
    for i, node in enumerate(g.nodes):
        src, reader = _through_flatten(g, i, node["inputs"][0]) if node["op"] == "BatchNorm" else (None, None)
        if src is None or g.op(src) not in ("Convolution", "FullyConnected") or g.only_user(src) != reader:
            continue
        out_shape = g.shape(src)
        if g.attr(src, "layout", "NCHW") not in ("NCHW", "NCW", "NCDHW", "None") or out_shape is None or (
                g.op(src) == "FullyConnected" and len(out_shape) != 2):
            continue
        affine, (w_entry, w, b_entry, b) = _bn_affine(g, i), _weight_bias(g, src[0])
        if affine is None or w is None or b is None:
            continue
        scale, shift = affine
        _set_weight_bias(g, src[0], g.node(src)["inputs"][0], w_entry, w * scale.reshape((-1,) + (1,) * (w.ndim - 1)),
                         b_entry, b * scale + shift)
        g.redirect(i, node["inputs"][0])


def _fold_bn_into_dense(g):
    """BatchNorm -> (Flatten ->) FullyConnected: scale the weight's input columns, shift the bias."""
    for i, node in enumerate(g.nodes):
        if node["op"] != "FullyConnected":
            continue
        reader, bn = i, node["inputs"][0]
        if g.op(bn) == "Flatten" and g.only_user(bn) == i:
            reader, bn = bn[0], g.node(bn)["inputs"][0]
        if g.op(bn) != "BatchNorm" or g.only_user(bn) != reader:
            continue
        x = g.node(bn)["inputs"][0]
        shape = g.shape(x)
        if shape is None or (len(shape) > 2 and reader == i and g.attr([i], "flatten", "True") not in ("True", "1")):
            continue
        affine, (w_entry, w, b_entry, b) = _bn_affine(g, bn[0]), _weight_bias(g, i)
        if affine is None or w is None or b is None:
            continue
        per = int(np.prod(shape[2:])) if len(shape) > 2 else 1
        scale, shift = (np.repeat(v, per) for v in affine)
        if reader != i:
            g.set_inputs(reader, [x])
        _set_weight_bias(g, i, node["inputs"][0] if reader != i else x, w_entry, w * scale[None, :], b_entry,
                         b + w @ shift)


def _drop_dropout(g):
    """Dropout is the identity at inference (unless mode='always')."""
    for i, node in enumerate(g.nodes):
        if node["op"] == "Dropout" and g.attr([i], "mode", "training") != "always":
            g.redirect(i, node["inputs"][0])


def _fold_param_scalars(g):
    """``param (+ - * /) scalar`` evaluated once into a new parameter."""
    for i, node in enumerate(g.nodes):
        if node["op"] in SCALAR_AFFINE and g.value(node["inputs"][0]) is not None:
            a, c = SCALAR_AFFINE[node["op"]](float(g.attr([i], "scalar")))
            g.redirect(i, g.var(node["name"], a * g.value(node["inputs"][0]) + c))


def _channel_prelu(g, i):
    """(x entry, alpha (C,), alpha variable entry or None) when add node ``i`` is gluonface's ChannelPReLU."""
    for x, conv in (g.nodes[i]["inputs"], g.nodes[i]["inputs"][::-1]):
        if g.op(conv) != "Convolution" or g.only_user(conv) != i:
            continue
        c = int(g.attr(conv, "num_filter", 0))
        minimum, w = g.node(conv)["inputs"][:2]
        if (int_tuple(g.attr(conv, "kernel")) != (1, 1) or int(g.attr(conv, "num_group", 1)) != c
                or g.attr(conv, "no_bias") not in ("True", "1") or g.op(minimum) != "_minimum_scalar"
                or float(g.attr(minimum, "scalar")) != 0.0 or g.node(minimum)["inputs"][0][:2] != x[:2]):
            continue
        if g.value(w) is not None:
            return x, g.value(w).reshape(c) + 1.0, None
        if g.op(w) == "_minus_scalar" and float(g.attr(w, "scalar")) == 1.0:
            alpha = g.node(w)["inputs"][0]
            if g.value(alpha) is not None:
                return x, g.value(alpha).reshape(c), alpha
    return None


def _fold_channel_prelu(g):
    """``x + dwconv1x1(min(x, 0), alpha - 1)`` -> ``LeakyReLU(x, alpha, act_type='prelu')``."""
    for i, node in enumerate(g.nodes):
        found = _channel_prelu(g, i) if node["op"] in _ADD else None
        if found:
            x, alpha, alpha_entry = found
            name = g.node(alpha_entry)["name"] if alpha_entry else node["name"] + "_alpha"
            gamma = g.param(alpha_entry, alpha, name)
            g.redirect(i, g.add("LeakyReLU", node["name"] + "_prelu", [x, gamma], act_type="prelu"))


def _affine_chain(g, entry, reader):
    """Walk back from ``entry`` through scalar ops read only by the next one: (source, a, c, count)."""
    a, c, count = 1.0, 0.0, 0
    while g.op(entry) in SCALAR_AFFINE and g.only_user(entry) == reader and g.value(entry) is None:
        ai, ci = SCALAR_AFFINE[g.op(entry)](float(g.attr(entry, "scalar")))
        a, c, count = a * ai, a * ci + c, count + 1
        reader, entry = entry[0], g.node(entry)["inputs"][0]
    return entry, a, c, count


def _pool_as_conv(g):
    """Scalar ops -> non-overlapping average pooling: the pooling becomes a depthwise conv (folded next)."""
    for i, node in enumerate(g.nodes):
        if node["op"] != "Pooling" or g.attr([i], "pool_type") != "avg" or g.attr([i], "global_pool") in ("True",
                                                                                                            "1"):
            continue
        kernel, stride = int_tuple(g.attr([i], "kernel")), int_tuple(g.attr([i], "stride")) or (1, 1)
        shape = g.shape(node["inputs"][0])
        if (len(kernel) != 2 or kernel != stride or any(int_tuple(g.attr([i], "pad", "(0, 0)"))) or shape is None
                or shape[2] % kernel[0] or shape[3] % kernel[1] or not _affine_chain(g, node["inputs"][0], i)[3]):
            continue
        ch = shape[1]
        w = np.full((ch, 1) + kernel, 1.0 / (kernel[0] * kernel[1]))
        conv = g.add("Convolution", node["name"] + "_conv", [node["inputs"][0], g.var(node["name"] + "_weight", w),
                                                              g.var(node["name"] + "_bias", np.zeros(ch))],
                     kernel=kernel, stride=kernel, num_filter=ch, num_group=ch, no_bias=False, shape=g.shape([i]))
        g.redirect(i, conv)


def _fold_affine_into_conv(g):
    """Scalar ``a * x + c`` read only by a Convolution: W -> a W, b -> b + c * sum(W). A shift ``c`` needs an
    unpadded convolution (it would also reach the zero padding); a pure scale folds into any convolution."""
    for i, node in enumerate(g.nodes):
        if node["op"] != "Convolution":
            continue
        x, a, c, count = _affine_chain(g, node["inputs"][0], i)
        padded = any(int_tuple(g.attr([i], "pad", "(0, 0)")))
        w_entry, w, b_entry, b = _weight_bias(g, i)
        if count and w is not None and b is not None and not (padded and c != 0.0):
            _set_weight_bias(g, i, x, w_entry, a * w, b_entry, b + c * w.sum(axis=tuple(range(1, w.ndim))))


def fold_for_inference(sym, arg_params, aux_params, input_shape=(1, 3, 112, 112)):
    """Apply the exact inference rewrites of this module (see its docstring).

    Args:
        sym, arg_params, aux_params: an embedding symbol (``embedding_symbol``), input ``data``.
        input_shape: (N, 3, H, W) for shape inference (the batch size does not matter).

    Returns:
        (sym, arg_params, aux_params) of the folded graph, float32 NDArrays; same input and output names.
    """
    g = SymbolGraph(sym, dict(arg_params, **aux_params), input_shape)
    for rewrite in (_fold_channel_prelu, _fold_param_scalars, _drop_dropout, _fold_bn_into_producer,
                    _fold_bn_into_dense, _pool_as_conv, _fold_affine_into_conv):
        rewrite(g)
    return g.to_symbol()


def _lower_prelu(g):
    """PReLU on (N, C, H, W) -> ``x + dwconv1x1(relu(dwconv1x1(x, -1)), 1 - alpha)``: oneDNN convolutions
    with a fused relu and a fused sum. The relu must not read ``x`` directly: MXNet 1.9.1's oneDNN
    partitioner would fuse it into the convolution producing ``x`` although ``x`` has another reader."""
    for i, node in enumerate(g.nodes):
        x = node["inputs"][0] if node["op"] == "LeakyReLU" and g.attr([i], "act_type") == "prelu" else None
        alpha = g.value(node["inputs"][1]) if x is not None else None
        shape = g.shape(x) if x is not None else None
        if alpha is None or shape is None or len(shape) != 4:
            continue
        ch, name = shape[1], node["name"]
        dw = dict(kernel=(1, 1), num_filter=ch, num_group=ch, no_bias=True, shape=shape)
        neg = g.add("Convolution", name + "_neg", [x, g.var(name + "_minus_one", -np.ones((ch, 1, 1, 1)))], **dw)
        relu = g.add("Activation", name + "_relu", [neg], act_type="relu", shape=shape)
        slope = g.var(name + "_one_minus_alpha", (1.0 - alpha.reshape(-1)).reshape(ch, 1, 1, 1))
        negpart = g.add("Convolution", name + "_negpart", [relu, slope], **dw)
        g.redirect(i, g.add("elemwise_add", name + "_sum", [x, negpart], shape=shape))


def _lower_batchnorm(g):
    """A BatchNorm left on (N, C, H, W) -> depthwise 1x1 convolution with bias (cheaper per call in oneDNN)."""
    for i, node in enumerate(g.nodes):
        affine = _bn_affine(g, i) if node["op"] == "BatchNorm" else None
        shape = g.shape(node["inputs"][0]) if affine else None
        if shape is None or len(shape) != 4:
            continue
        ch, (scale, shift) = shape[1], affine
        conv = g.add("Convolution", node["name"] + "_conv",
                     [node["inputs"][0], g.var(node["name"] + "_scale", scale.reshape(ch, 1, 1, 1)),
                      g.var(node["name"] + "_shift", shift)], kernel=(1, 1), num_filter=ch, num_group=ch, shape=shape)
        g.redirect(i, conv)


def _lower_dense_input(g):
    """A FullyConnected reading (N, C, H, W) gets an explicit Flatten first. On AVX-512 oneDNN hands it the
    4-D input in a blocked layout, and from the executor's second forward on MXNet 1.9.1's FullyConnected
    fails on it ("Can't generate TBlob for MKLDNN data"; not with DNNL_MAX_CPU_ISA=AVX2)."""
    for i, node in enumerate(g.nodes):
        x = node["inputs"][0] if node["op"] == "FullyConnected" else None
        shape = g.shape(x) if x is not None else None
        if shape is None or len(shape) < 3 or g.attr([i], "flatten", "True") not in ("True", "true", "1"):
            continue
        flat = g.add("Flatten", node["name"] + "_flatten", [x], shape=(shape[0], int(np.prod(shape[1:]))))
        g.set_inputs(i, [flat] + node["inputs"][1:])


def lower_for_onednn(sym, arg_params, aux_params, input_shape=(1, 3, 112, 112)):
    """Rewrite a folded symbol for MXNet's oneDNN CPU backend (see the module docstring); same outputs.

    Returns:
        (sym, arg_params, aux_params) of a plain MXNet symbol, float32 NDArrays.
    """
    g = SymbolGraph(sym, dict(arg_params, **aux_params), input_shape)
    for rewrite in (_lower_prelu, _lower_batchnorm, _lower_dense_input):
        rewrite(g)
    return g.to_symbol()
