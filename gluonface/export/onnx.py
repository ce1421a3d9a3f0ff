"""ONNX export through ``mx.onnx`` plus the graph fixes MXNet 1.9.1's exporter needs for face networks.

Fixes applied to the exported graph (each one breaks onnxruntime or silently changes outputs otherwise):
1. BatchNorm with ``fix_gamma=True``: MXNet ignores gamma, ONNX multiplies by it; ``embedding_symbol``
   already writes those gammas as ones.
2. PReLU after a convolution: MXNet broadcasts the (C,) slope over channels, ONNX broadcasts from the
   right (over W) and onnxruntime fails ("cannot broadcast 64 by 56"); slopes become (C, 1, 1).
3. The exporter lists every initializer as a graph input, which blocks constant folding in onnxruntime
   (and lets callers override weights); they are removed from the inputs.
4. A named dynamic batch dimension (``batch``) on the input and the output.
5. The exporter stamps the installed onnx's newest opset although its translations are written for
   opset <= 13; the model declares opset 13, which the checker then validates the nodes against.
Then, for clients: the input normalisation nodes of the ``raw`` convention (``gluonface.export.convention``)
go in front, and the model's ``metadata_props`` and doc strings say what to feed and what comes out.
"""
import json
import os

import numpy as np

from gluonface.errors import GluonFaceError
from gluonface.export.names import INPUT_NAME, OUTPUT_NAME

OPSET = 13


def _prelu_ranks(sym, input_shape):
    """{MXNet PReLU node name: (rank of its input, slope param name)} from MXNet shape inference."""
    nodes = json.loads(sym.tojson())["nodes"]
    internals = sym.get_internals()
    _, out_shapes, _ = internals.infer_shape(**{INPUT_NAME: tuple(input_shape)})
    shape_of = dict(zip(internals.list_outputs(), out_shapes))
    ranks = {}
    for node in nodes:
        if node["op"] == "LeakyReLU" and node.get("attrs", {}).get("act_type") == "prelu":
            slope = nodes[node["inputs"][1][0]]["name"]
            ranks[node["name"]] = (len(shape_of[node["name"] + "_output"]), slope)
    return ranks


def _fix_graph(model, prelu_ranks):
    import onnx
    from onnx import numpy_helper
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    slope_rank = {}
    for node in graph.node:
        if node.op_type == "PRelu" and len(node.input) > 1:
            rank = prelu_ranks.get(node.name, (None, None))[0]
            if rank is not None:
                slope_rank[node.input[1]] = rank
    for name, rank in slope_rank.items():
        if name in inits and rank > 2:
            arr = numpy_helper.to_array(inits[name])
            if arr.ndim == 1 and arr.size > 1:
                arr = arr.reshape((-1,) + (1,) * (rank - 2))
                inits[name].CopyFrom(numpy_helper.from_array(arr, name))
    keep = [i for i in graph.input if i.name not in inits]
    del graph.input[:]
    graph.input.extend(keep)
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = OPSET
    onnx.checker.check_model(model, full_check=True)
    return model


def prepend_input_norm(model, mean, scale):
    """Make the graph start with ``Sub(data, mean)`` and ``Mul(., scale)``, real nodes with the names
    insightface's model router keys on (``convention.SUB_NODE`` / ``MUL_NODE``); the rest reads their output.

    The constants are (1, 1, 1, 1) float32 initializers ``input_mean`` / ``input_scale``: rank-4 broadcasting
    that every runtime (onnxruntime, TensorRT) accepts."""
    from onnx import helper, numpy_helper
    from gluonface.export.convention import MUL_NODE, SUB_NODE
    graph = model.graph
    centered, normalised = INPUT_NAME + "_centered", INPUT_NAME + "_normalized"
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == INPUT_NAME:
                node.input[k] = normalised
    graph.initializer.extend([numpy_helper.from_array(np.full((1, 1, 1, 1), mean, np.float32), "input_mean"),
                              numpy_helper.from_array(np.full((1, 1, 1, 1), scale, np.float32), "input_scale")])
    nodes = [helper.make_node("Sub", [INPUT_NAME, "input_mean"], [centered], name=SUB_NODE,
                              doc_string="raw RGB 0..255 minus the mean the network was trained with"),
             helper.make_node("Mul", [centered, "input_scale"], [normalised], name=MUL_NODE,
                              doc_string="times the scale the network was trained with")]
    nodes.extend(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def describe(model, props):
    """Write ``props`` into ``metadata_props`` and a doc string on the model, its input and its output."""
    from onnx import helper
    helper.set_model_props(model, props)
    size = props.get("input_size", "H,W").replace(",", ", ")
    pixels = ("raw RGB pixels 0..255" if props.get("input_convention") == "raw" else
              f"RGB pixels as (x - {props.get('input_mean')}) / {props.get('input_std')}")
    model.graph.input[0].doc_string = (f"(batch, 3, {size}) float32 aligned faces (ArcFace 5-point template), "
                                       f"{pixels}, NCHW")
    model.graph.output[0].doc_string = (f"(batch, {props.get('embedding_size', 'E')}) float32 embeddings, not "
                                        "L2-normalised; compare with cosine similarity")
    model.doc_string = (f"Face embedding model exported by {props.get('producer', 'gluonface')}: input "
                        f"'{INPUT_NAME}' {model.graph.input[0].doc_string}; output '{OUTPUT_NAME}' "
                        f"{model.graph.output[0].doc_string}. metadata_props hold the details.")
    return model


def export_onnx(sym, arg_params, aux_params, out_path, input_shape=(1, 3, 112, 112), input_norm=None,
                metadata=None):
    """Export the embedding symbol to ONNX with a dynamic batch and check it with the onnx checker.

    Args:
        sym, arg_params, aux_params: from ``gluonface.export.symbol.embedding_symbol`` (or
            ``convention.client_graph``).
        out_path: the ``.onnx`` file to write.
        input_shape: (1, 3, H, W) used for tracing; the batch dimension is made dynamic.
        input_norm: optional (mean, scale): ``Sub``/``Mul`` nodes put in front (``prepend_input_norm``).
        metadata: optional {str: str} for ``metadata_props`` (``convention.metadata_props``). Without it,
            clients (insightface, ``FaceEmbedder``) can only guess the input convention from node names.

    Returns:
        out_path.
    """
    try:
        import onnx
        import mxnet as mx
    except ImportError as exc:  # pragma: no cover - the export extra is in requirements.txt
        raise GluonFaceError(f"ONNX export needs the onnx package ({exc}); fix: pip install "
                             "'gluonface[export]'") from exc
    params = dict(arg_params)
    params.update(aux_params)
    tmp = out_path + ".raw"
    shape = (1,) + tuple(input_shape[1:])
    try:
        mx.onnx.export_model(sym, params, in_shapes=[shape], in_types=[np.float32], onnx_file_path=tmp,
                             dynamic=True, dynamic_input_shapes=[(None,) + shape[1:]])
        model = onnx.load(tmp)
        if input_norm is not None:
            prepend_input_norm(model, *input_norm)
        model = _fix_graph(model, _prelu_ranks(sym, shape))
        if metadata:
            describe(model, metadata)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    onnx.save(model, out_path)
    return out_path


def onnx_session(path, threads=None):
    """An onnxruntime CPU session for ``path`` (``threads`` intra-op threads, default: runtime's)."""
    import onnxruntime as ort
    if not os.path.isfile(path):
        raise GluonFaceError(f"ONNX file {path} does not exist; fix: export it with `gluonface export RUN_DIR "
                             "PREFIX --onnx`")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception classes for corrupt files
        raise GluonFaceError(f"onnxruntime cannot load {path} ({str(exc)[:200]}); fix: re-export the model "
                             "with `gluonface export --onnx`") from exc
