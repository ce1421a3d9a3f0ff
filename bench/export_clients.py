"""The exported ONNX files as their clients run them, for ``bench_export.py``: gluonface's ``FaceEmbedder``
beside insightface's own recognition class (``insightface.model_zoo.get_model``: its onnxruntime session,
its ``cv2.dnn.blobFromImages`` preprocessing of BGR crops), for both input conventions.

Reports agreement (min cosine to the MXNet symbol, held-out verification accuracy without flip TTA, and the
same for insightface on a file whose first node names do not tell it the input is raw, i.e. before
``--onnx-input``) and speed from uint8 crops, against a bare onnxruntime session fed a ready float batch.
"""
import os

import numpy as np



def cpu_line():
    """The CPU and the instruction sets that matter to the kernels (``gluonface.machine.cpu_line``)."""
    from gluonface.machine import cpu_line as line
    return line()


def _insightface_model(path, threads):
    import onnxruntime as ort
    from insightface.model_zoo import model_zoo
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return model_zoo.get_model(path, providers=["CPUExecutionProvider"], sess_options=opts)


def _renamed_copy(path, out):
    """The raw file with its first node names changed: what gluonface exported before ``--onnx-input``."""
    import onnx
    from gluonface.export.convention import MUL_NODE, SUB_NODE
    model = onnx.load(path)
    for node in model.graph.node:
        if node.name in (SUB_NODE, MUL_NODE):
            node.name = "input_" + node.op_type.lower()
    onnx.save(model, out)
    return out


def client_forms(net, work, threads):
    """(paths {convention: onnx path}, symbol prefix, {row name: f(rgb uint8 NHWC) -> (N, E)})."""
    from gluonface.export.embedder import FaceEmbedder
    from gluonface.export.run import export_model
    paths = {}
    for convention in ("raw", "normalized"):
        prefix = os.path.join(work, "clients", convention, "model")
        export_model(net, prefix, onnx=True, onnx_input=convention)
        paths[convention] = prefix + ".onnx"
    forms = {}
    for convention, path in paths.items():
        ours = FaceEmbedder.from_path(path, threads=threads)
        forms[f"FaceEmbedder, ONNX {convention}"] = lambda rgb, e=ours: e.embed(rgb, flip=False, batch_size=64)
        theirs = _insightface_model(path, threads)
        forms[f"insightface get_feat, ONNX {convention}"] = lambda rgb, m=theirs: m.get_feat(
            [im[:, :, ::-1] for im in rgb])
    return paths, os.path.join(work, "clients", "raw", "model"), forms


def agreement(net, work, threads, held_x, pairs, same):
    """Markdown lines: min cosine to the MXNet symbol on the held-out faces and verification accuracy."""
    from gluonface.evaluate.verification import verification_metrics
    from gluonface.export.embedder import FaceEmbedder
    paths, symbol_prefix, forms = client_forms(net, work, threads)
    stale = _insightface_model(_renamed_copy(paths["raw"], os.path.join(work, "clients", "renamed.onnx")),
                               threads)
    forms["insightface get_feat, ONNX without the Sub/Mul names (before)"] = lambda rgb: stale.get_feat(
        [im[:, :, ::-1] for im in rgb])
    ref = FaceEmbedder.from_path(symbol_prefix).embed(held_x, flip=False)
    idx = np.array(pairs)
    lines = [f"**ONNX clients on {len(held_x)} held-out faces** (no flip TTA; {len(pairs)} pairs, 10-fold)", "",
             "| client | min cosine to MXNet symbol | accuracy % |", "|---|---|---|",
             f"| MXNet symbol (FaceEmbedder) | 1 | "
             f"{100 * verification_metrics(_pairs(ref, idx), np.array(same))['accuracy']:.2f} |"]
    for name, f in forms.items():
        e = np.asarray(f(held_x), np.float64)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        acc = verification_metrics(_pairs(e, idx), np.array(same))["accuracy"]
        lines.append(f"| {name} | {np.sum(e * ref, axis=1).min():.6f} | {100 * acc:.2f} |")
    return lines, forms


def _pairs(emb, idx):
    """Embeddings laid out as verification_metrics takes them: (2P, E), pair members adjacent."""
    return emb[idx.reshape(-1)]


def speed_forms(forms, paths, threads, held_x):
    """{row: f(x)} for ``bench_export.measure``: each ignores x's values and embeds that many uint8 crops;
    the baseline is a bare onnxruntime session on the raw file fed a ready float32 batch."""
    from gluonface.export.onnx import onnx_session
    crops = {}

    def batch_of(x):
        n = x.shape[0]
        if n not in crops:
            crops[n] = np.ascontiguousarray(held_x[np.arange(n) % len(held_x)])
        return crops[n]
    sess = onnx_session(paths["raw"], threads)
    out = {"onnxruntime session only (raw file, float32 batch ready)": lambda x: sess.run(None, {"data": x})[0]}
    for name, f in forms.items():
        if "before" not in name:
            out[name] = lambda x, f=f: f(batch_of(x))
    return out
