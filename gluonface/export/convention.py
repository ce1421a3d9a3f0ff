"""The input convention of an exported ONNX model: which pixels a client feeds, and how the graph says so.

gluonface networks take raw RGB pixels 0..255 and normalise them in-graph as ``(x - 127.5) / 128``. Clients
of ONNX face models follow one of two conventions, and ``gluonface export --onnx-input`` writes either:

- ``raw`` (default): the client feeds raw RGB 0..255 (mean 0, std 1). The graph starts with real ``Sub`` and
  ``Mul`` nodes named ``Sub_input_mean`` / ``Mul_input_scale``, the form of insightface's converted MXNet
  models, which is what ``insightface.model_zoo``'s recognition class detects: it reads the names of the
  graph's first 8 nodes, and only a ``Sub``/``_minus`` name together with a ``Mul``/``_mul`` name makes it feed
  raw pixels. The rest of the graph is folded as usual.
- ``normalized``: the client feeds ``(x - 127.5) / 127.5`` (arcface_torch's ONNX models; what insightface
  feeds any model without those nodes). The graph holds no normalisation: the network needs
  ``(x - 127.5) / 128 = n * 127.5 / 128``, and that exact scale is folded into the first convolution.

Either way the model's ``metadata_props`` record the convention, mean, std, colour order (RGB), layout, input
size and embedding size, and ``FaceEmbedder`` (so ``gluonface eval`` / ``embed``) feeds what they say.
"""
import json
import os

from gluonface.errors import GluonFaceError
from gluonface.export.names import INPUT_NAME, OUTPUT_NAME

CONVENTIONS = {"raw": (0.0, 1.0), "normalized": (127.5, 127.5)}  # name -> (mean, std) the client applies
SUB_NODE, MUL_NODE = "Sub_input_mean", "Mul_input_scale"
ROUTER_NODES = 8  # insightface's recognition class looks at this many leading node names


def check_convention(name):
    """``name`` if it is a known input convention, else GluonFaceError naming the choices."""
    if name not in CONVENTIONS:
        raise GluonFaceError(f"unknown ONNX input convention {name!r}; fix: use one of {sorted(CONVENTIONS)} "
                             "(--onnx-input raw | normalized)")
    return name


def split_input_norm(sym, arg_params, aux_params, input_shape):
    """Cut the scalar ops applied to the input off the front of an embedding symbol.

    Args:
        sym, arg_params, aux_params: a traced embedding symbol (``embedding_symbol``), input ``data``.
        input_shape: (N, 3, H, W).

    Returns:
        (core sym, arg_params, aux_params, mean, scale): ``core`` takes ``(x - mean) * scale`` where ``x`` is
        what ``sym`` takes (mean 0, scale 1 when the network does not normalise its input).
    """
    from gluonface.export.fold import SCALAR_AFFINE
    from gluonface.export.graph import SymbolGraph
    g = SymbolGraph(sym, dict(arg_params, **aux_params), input_shape)
    data = [next(k for k, n in enumerate(g.nodes) if n["op"] == "null" and n["name"] == INPUT_NAME), 0, 0]
    entry, a, c = data, 1.0, 0.0
    while True:
        user = g.only_user(entry)
        node = g.nodes[user] if user is not None else None
        if node is None or node["op"] not in SCALAR_AFFINE or node["inputs"][0][:2] != entry[:2]:
            break
        ai, ci = SCALAR_AFFINE[node["op"]](float(g.attr([user], "scalar")))
        a, c, entry = ai * a, ai * c + ci, [user, 0, 0]
    if entry is data:
        return sym, arg_params, aux_params, 0.0, 1.0
    if a == 0.0:
        raise GluonFaceError("the network multiplies its input by 0; fix: check the model's input normalisation")
    g.redirect(entry[0], data)
    core, arg, aux = g.to_symbol()
    return core, arg, aux, -c / a, a


def client_graph(sym, arg_params, aux_params, convention, input_shape, fold=True):
    """The graph to export for clients that feed pixels the ``convention`` way.

    Args:
        sym, arg_params, aux_params: the traced embedding symbol (raw RGB 0..255 in).
        convention: ``raw`` or ``normalized`` (``CONVENTIONS``).
        fold: fold the graph for inference (``fold_for_inference``).

    Returns:
        (sym, arg_params, aux_params, input_norm): ``input_norm`` is (mean, scale) for the ``Sub``/``Mul``
        nodes the ONNX export puts in front of ``sym`` (``raw``), else None (the graph takes normalised input).
    """
    import mxnet as mx
    from gluonface.export.fold import fold_for_inference
    mean, std = CONVENTIONS[check_convention(convention)]
    core, arg, aux, m0, a0 = split_input_norm(sym, arg_params, aux_params, input_shape)
    input_norm = None
    if convention == "raw":
        input_norm = (m0, a0)
    else:
        # The client feeds n = (x - mean) / std; the core needs (x - m0) * a0 = std * a0 * n + (mean - m0) * a0.
        scale, shift = std * a0, (mean - m0) * a0
        x = mx.sym.var(INPUT_NAME)
        if scale != 1.0:
            x = mx.sym._internal._mul_scalar(x, scalar=scale, name="input_rescale")
        if shift != 0.0:
            x = mx.sym._internal._plus_scalar(x, scalar=shift, name="input_shift")
        core = core(**{INPUT_NAME: x})
    if fold:
        core, arg, aux = fold_for_inference(core, arg, aux, input_shape)
    return core, arg, aux, input_norm


def metadata_props(convention, input_size, embedding_size, backbone=None):
    """The ``metadata_props`` (str -> str) an exported ONNX model carries for its clients."""
    from gluonface import __version__
    mean, std = CONVENTIONS[check_convention(convention)]
    props = {
        "input_name": INPUT_NAME, "input_layout": "NCHW", "input_color_order": "RGB",
        "input_size": f"{int(input_size[0])},{int(input_size[1])}",
        "input_convention": convention, "input_mean": repr(mean), "input_std": repr(std),
        "input_formula": f"{INPUT_NAME} = (rgb - input_mean) / input_std, rgb = aligned face pixels 0..255",
        "alignment": "ArcFace 5-point similarity template (insightface face_align.norm_crop)",
        "output_name": OUTPUT_NAME, "embedding_size": str(int(embedding_size)),
        "output_normalized": "false", "producer": f"gluonface {__version__}",
    }
    if backbone:
        props["backbone"] = str(backbone)
    return props


def router_convention(model):
    """(mean, std) insightface's recognition class would feed ``model`` (an ``onnx.ModelProto``).

    Its rule, as its ``ArcFaceONNX`` states it: among the names of the graph's first 8 nodes, one starting
    with ``Sub`` or ``_minus`` and one starting with ``Mul`` or ``_mul`` mean raw pixels (mean 0, std 1);
    anything else means ``(x - 127.5) / 127.5``.
    """
    names = [node.name for node in model.graph.node[:ROUTER_NODES]]
    sub = any(n.startswith(("Sub", "_minus")) for n in names)
    mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return CONVENTIONS["raw"] if sub and mul else CONVENTIONS["normalized"]


def onnx_input_spec(path, custom_metadata=None):
    """What to feed an ONNX face model: ``{"mean", "std", "color_order", "convention", "source"}``.

    Args:
        path: the ``.onnx`` file.
        custom_metadata: its metadata_props when already read (onnxruntime's ``custom_metadata_map``).

    The model's metadata decides; a gluonface export from before the metadata (its ``export.json`` beside it
    lists the file) took raw pixels; any other model is read the way insightface reads it (node names).
    """
    props = dict(custom_metadata) if custom_metadata is not None else None
    if props is None:
        import onnx
        props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    if "input_mean" in props and "input_std" in props:
        try:
            mean, std = float(props["input_mean"]), float(props["input_std"])
        except ValueError:
            mean = std = float("nan")
        color = props.get("input_color_order", "RGB").upper()
        if not std > 0 or mean != mean or color not in ("RGB", "BGR"):
            raise GluonFaceError(f"{path} has unusable input metadata (input_mean={props['input_mean']!r}, "
                                 f"input_std={props['input_std']!r}, input_color_order={color!r}); fix: "
                                 "re-export it with `gluonface export --onnx`")
        return {"mean": mean, "std": std, "color_order": color, "source": "metadata",
                "convention": props.get("input_convention", "custom")}
    meta = os.path.join(os.path.dirname(os.path.abspath(path)), "export.json")
    if os.path.isfile(meta):
        with open(meta, encoding="utf-8") as f:
            files = json.load(f).get("files", {})
        if files.get("onnx") == os.path.basename(path):
            return {"mean": 0.0, "std": 1.0, "color_order": "RGB", "convention": "raw",
                    "source": "export.json (gluonface export without ONNX metadata)"}
    import onnx
    mean, std = router_convention(onnx.load(path, load_external_data=False))
    return {"mean": mean, "std": std, "color_order": "RGB",
            "convention": "raw" if (mean, std) == CONVENTIONS["raw"] else "normalized",
            "source": "node names (insightface's rule)"}
