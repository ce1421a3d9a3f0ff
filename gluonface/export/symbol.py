"""The embedding network as a plain MXNet symbol checkpoint (``PREFIX-symbol.json`` + ``PREFIX-0000.params``).

The checkpoint is written with ``mx.model.save_checkpoint`` so it loads both ways users expect:
``gluon.SymbolBlock.imports(json, ['data'], params)`` and ``mx.model.load_checkpoint(prefix, 0)`` +
``mx.mod.Module``. Its single input is ``data`` (N, 3, H, W) float32 raw RGB 0..255 (the network
normalises in-graph) and its single output is an ``identity`` node named ``fc1`` (output ``fc1_output``),
the name insightface models expose, so ``sym.get_internals()['fc1_output']`` works as with theirs.
"""
import json
import os
import warnings

import numpy as np

from gluonface.errors import GluonFaceError
from gluonface.export.names import INPUT_NAME, OUTPUT_NAME


def embedding_symbol(net, output_name=OUTPUT_NAME):
    """Trace a Gluon HybridBlock into a symbol and split its parameters.

    Args:
        net: HybridBlock mapping (N, 3, H, W) float32 raw pixels to (N, E) embeddings, initialised.

    Returns:
        (sym with one output ``<output_name>_output``, arg_params {name: NDArray on cpu},
        aux_params {name: NDArray on cpu}). Gamma of every BatchNorm with ``fix_gamma=True`` is written as
        ones: MXNet ignores it, but other runtimes (ONNX) read it.
    """
    import mxnet as mx
    if not isinstance(net, mx.gluon.HybridBlock):
        raise GluonFaceError(f"{type(net).__name__} is not a HybridBlock; fix: export a gluonface backbone "
                             "(gluonface.models.get_model) or another HybridBlock")
    out = net(mx.sym.var(INPUT_NAME))
    if len(out.list_outputs()) != 1:
        raise GluonFaceError(f"the network has {len(out.list_outputs())} outputs; expected one embedding; "
                             "fix: export the backbone without the classifier")
    sym = mx.sym.identity(out, name=output_name)
    params = {p.name: p for p in net.collect_params().values()}
    values = {}
    for name in sym.list_arguments() + sym.list_auxiliary_states():
        if name == INPUT_NAME:
            continue
        if name not in params:
            raise GluonFaceError(f"the traced graph needs parameter {name!r} the block does not hold; fix: "
                                 "export a self-contained HybridBlock")
        values[name] = params[name].data(params[name].list_ctx()[0]).copyto(mx.cpu())
    for gamma in fixed_gamma_names(sym):
        values[gamma] = mx.nd.ones_like(values[gamma])
    aux_names = set(sym.list_auxiliary_states())
    arg_params = {k: v for k, v in values.items() if k not in aux_names}
    aux_params = {k: v for k, v in values.items() if k in aux_names}
    return sym, arg_params, aux_params


def fixed_gamma_names(sym):
    """Names of the gamma inputs of BatchNorm nodes with ``fix_gamma=True`` (MXNet's default!)."""
    graph = json.loads(sym.tojson())
    nodes = graph["nodes"]
    names = []
    for node in nodes:
        if node["op"] == "BatchNorm":
            # An absent attribute means MXNet's default, which is fix_gamma=True.
            if node.get("attrs", {}).get("fix_gamma", "True") in ("True", "true", "1"):
                names.append(nodes[node["inputs"][1][0]]["name"])
    return names


def save_symbol(sym, arg_params, aux_params, out_prefix):
    """Write ``out_prefix-symbol.json`` and ``out_prefix-0000.params``; returns their paths."""
    import mxnet as mx
    os.makedirs(os.path.dirname(os.path.abspath(out_prefix)), exist_ok=True)
    mx.model.save_checkpoint(out_prefix, 0, sym, arg_params, aux_params, remove_amp_cast=True)
    return {"symbol": f"{out_prefix}-symbol.json", "params": f"{out_prefix}-0000.params"}


def export_symbol(net, out_prefix, output_name=OUTPUT_NAME, fold=True, input_size=(112, 112)):
    """Export a Gluon embedding network as a symbol checkpoint.

    Args:
        fold: apply ``gluonface.export.fold.fold_for_inference`` (BatchNorm folded into convolutions, one
            PReLU operator, ...): the same embeddings with fewer operators. False writes the traced graph.
        input_size: (H, W) the network takes (shape inference of the folding).

    Returns:
        dict with ``symbol`` and ``params`` paths, plus ``sym``, ``arg_params``, ``aux_params`` as written and
        ``traced`` (sym, arg_params, aux_params) before folding.
    """
    sym, arg, aux = traced = embedding_symbol(net, output_name)
    if fold:
        from gluonface.export.fold import fold_for_inference
        sym, arg, aux = fold_for_inference(sym, arg, aux, (1, 3) + tuple(input_size))
    paths = save_symbol(sym, arg, aux, out_prefix)
    return dict(paths, sym=sym, arg_params=arg, aux_params=aux, traced=traced)


def split_prefix(prefix_or_json):
    """Accept ``PREFIX``, ``PREFIX-symbol.json`` or ``PREFIX-0000.params``; return (prefix, epoch)."""
    path = str(prefix_or_json)
    if path.endswith("-symbol.json"):
        return path[:-len("-symbol.json")], 0
    if path.endswith(".params") and path[-12:-11] == "-" and path[-11:-7].isdigit():
        return path[:-12], int(path[-11:-7])
    return path, 0


def load_checkpoint(prefix_or_json):
    """Read an exported symbol checkpoint and check its two files belong together.

    Returns:
        (sym, params {name: NDArray as saved}, symbol file path, params file path).
    Raises:
        GluonFaceError for a missing file, a symbol without the ``data`` input or missing parameters.
    """
    import mxnet as mx
    prefix, epoch = split_prefix(prefix_or_json)
    sym_path, params_path = f"{prefix}-symbol.json", f"{prefix}-{epoch:04d}.params"
    for path, what in ((sym_path, "symbol"), (params_path, "params")):
        if not os.path.isfile(path):
            raise GluonFaceError(f"{what} file {path} does not exist; fix: pass the prefix given to "
                                 "`gluonface export` (it writes PREFIX-symbol.json and PREFIX-0000.params)")
    sym = mx.sym.load(sym_path)
    if INPUT_NAME not in sym.list_inputs():
        raise GluonFaceError(f"{sym_path} has no input named 'data' (inputs: {sym.list_inputs()[:5]} ...); "
                             "fix: export the model with `gluonface export`")
    saved = {k.split(":", 1)[-1]: v for k, v in mx.nd.load(params_path).items()}
    needed = [n for n in sym.list_inputs() if n != INPUT_NAME]
    missing = [n for n in needed if n not in saved]
    if missing:
        raise GluonFaceError(f"{params_path} does not match {sym_path}: {len(missing)} of {len(needed)} "
                             f"parameters are missing (e.g. {missing[0]!r}); fix: use the params file written "
                             "together with this symbol file")
    return sym, saved, sym_path, params_path


def check_shapes(sym, params, input_size, where):
    """Raise GluonFaceError when a parameter's shape is not the one ``sym`` infers for (1, 3, H, W) input."""
    import mxnet as mx
    try:
        arg_shapes, _, aux_shapes = sym.infer_shape(**{INPUT_NAME: (1, 3) + tuple(input_size)})
    except mx.base.MXNetError as exc:
        detail = str(exc).splitlines()[0][:200]
    else:
        wanted = dict(zip(sym.list_arguments() + sym.list_auxiliary_states(), arg_shapes + aux_shapes))
        bad = [(n, tuple(v.shape), tuple(wanted[n])) for n, v in params.items()
               if n in wanted and n != INPUT_NAME and tuple(v.shape) != tuple(wanted[n])]
        if not bad:
            return
        detail = f"Shape inconsistent: {bad[0][0]} is {bad[0][1]} in the params file, the symbol needs {bad[0][2]}"
    raise GluonFaceError(f"{where} does not run on (1, 3, {input_size[0]}, {input_size[1]}) input ({detail}); fix: "
                         "use the symbol and params files written together by `gluonface export` (a params file "
                         "of another network gives wrong shapes), and check input_size in export.json")


def symbol_block(sym, params, ctx=None):
    """A ``gluon.SymbolBlock`` of ``sym`` (input ``data``) holding ``params`` ({name: NDArray}) on ``ctx``."""
    import mxnet as mx
    with warnings.catch_warnings():
        # SymbolBlock cannot infer the input dtype from a bare symbol; float32 is what callers feed.
        warnings.simplefilter("ignore", UserWarning)
        block = mx.gluon.SymbolBlock(sym, mx.sym.var(INPUT_NAME))
    try:
        # INT8 checkpoints store int8 weights: keep each parameter's saved dtype, as SymbolBlock.imports does.
        block.collect_params().load_dict(params, ctx=ctx or mx.cpu(), allow_missing=False, ignore_extra=True,
                                         cast_dtype=True, dtype_source="saved")
    except (AssertionError, mx.base.MXNetError, ValueError) as exc:
        raise GluonFaceError(f"the parameters do not fit the symbol ({str(exc).splitlines()[0][:200]}); "
                             "fix: use the params file written together with this symbol file") from exc
    return block


def load_symbol_block(prefix_or_json, ctx=None):
    """Load an exported symbol checkpoint as a ``gluon.SymbolBlock`` on ``ctx`` (default cpu), as saved.

    Raises GluonFaceError for a missing file or a params file that does not belong to the symbol.
    """
    sym, params, _, _ = load_checkpoint(prefix_or_json)
    return symbol_block(sym, params, ctx)


def check_input(x, input_size, dtype=np.float32):
    """Validate an NCHW batch against the model's (H, W); returns it contiguous, as float32, or as it is when
    it is already of the forward's own input ``dtype`` (uint8 pixels for INT8 graphs that take them)."""
    x = np.asarray(x)
    x = np.ascontiguousarray(x, dtype=x.dtype if x.dtype == np.dtype(dtype) else np.float32)
    if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != tuple(input_size):
        raise GluonFaceError(f"input batch has shape {x.shape}; the model expects (N, 3, {input_size[0]}, "
                             f"{input_size[1]}); fix: align faces to {input_size[0]}x{input_size[1]} first "
                             "(`gluonface align`)")
    return x
