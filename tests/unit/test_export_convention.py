"""ONNX input conventions (gluonface.export.convention): what the graph takes, what it says, who reads it how."""
import json

import mxnet as mx
import numpy as np
import onnx
import pytest
from mxnet.gluon import nn
from onnx import helper

from gluonface.errors import GluonFaceError
from gluonface.export.convention import (CONVENTIONS, client_graph, metadata_props, onnx_input_spec,
                                         router_convention, split_input_norm)
from gluonface.export.embedder import FaceEmbedder
from gluonface.export.onnx import export_onnx
from gluonface.export.symbol import embedding_symbol, symbol_block

SHAPE = (1, 3, 16, 16)


class _Net(nn.HybridBlock):
    """Normalises like gluonface's FaceNet (optional), then a padded conv, PReLU, dense."""

    def __init__(self, input_norm=True):
        super().__init__(prefix="probe_")
        self.input_norm = input_norm
        with self.name_scope():
            self.conv = nn.Conv2D(6, 3, strides=2, padding=1)
            self.act = nn.PReLU(in_channels=6)
            self.fc = nn.Dense(8)

    def hybrid_forward(self, F, x):
        if self.input_norm:
            x = (x - 127.5) * 0.0078125
        return self.fc(self.act(self.conv(x)))


def _net(input_norm=True):
    net = _Net(input_norm)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros(SHAPE))
    return net


def _pixels(n=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n,) + SHAPE[1:])


def _run(sym, arg, aux, x):
    return symbol_block(sym, dict(arg, **aux))(mx.nd.array(x)).asnumpy()


def _ops(sym):
    return [n["op"] for n in json.loads(sym.tojson())["nodes"] if n["op"] != "null"]


def test_split_input_norm_cuts_the_leading_scalar_ops():
    net = _net()
    core, arg, aux, mean, scale = split_input_norm(*embedding_symbol(net), SHAPE)
    assert (mean, scale) == (127.5, 0.0078125)
    assert not {"_minus_scalar", "_mul_scalar"} & set(_ops(core))
    x = _pixels()
    np.testing.assert_allclose(_run(core, arg, aux, (x - 127.5) / 128), net(mx.nd.array(x)).asnumpy(),
                               rtol=1e-5, atol=1e-5)
    sym, arg, aux = embedding_symbol(_net(input_norm=False))
    assert split_input_norm(sym, arg, aux, SHAPE)[3:] == (0.0, 1.0)


@pytest.mark.parametrize("input_norm", [True, False])
def test_client_graphs_compute_the_network_from_their_inputs(input_norm):
    net = _net(input_norm)
    traced = embedding_symbol(net)
    x = _pixels()
    want = net(mx.nd.array(x)).asnumpy()
    sym, arg, aux, norm = client_graph(*traced, "raw", SHAPE)
    assert norm == ((127.5, 0.0078125) if input_norm else (0.0, 1.0))
    np.testing.assert_allclose(_run(sym, arg, aux, (x - norm[0]) * norm[1]), want, rtol=1e-5, atol=1e-5)
    sym, arg, aux, norm = client_graph(*traced, "normalized", SHAPE)
    assert norm is None
    if input_norm:  # 127.5 / 128 is a pure scale: folded into the first (padded) convolution
        assert _ops(sym)[0] == "Convolution"
    np.testing.assert_allclose(_run(sym, arg, aux, (x - 127.5) / 127.5), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(GluonFaceError, match="raw.*normalized|normalized.*raw"):
        client_graph(*traced, "bgr", SHAPE)


def _graph_with_names(names):
    """An ONNX model of chained Identity nodes with the given node names (for the router rule)."""
    nodes = [helper.make_node("Identity", [f"t{k}"], [f"t{k + 1}"], name=n) for k, n in enumerate(names)]
    x = helper.make_tensor_value_info("t0", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info(f"t{len(names)}", onnx.TensorProto.FLOAT, [1])
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y]))


@pytest.mark.parametrize("names, want", [
    (["Sub_input_mean", "Mul_input_scale", "Conv_0"], "raw"),
    (["_minusscalar0", "_mulscalar0", "conv0"], "raw"),                   # insightface's converted MXNet models
    (["probe__minusscalar0", "probe__mulscalar0", "conv0"], "normalized"),  # gluonface's names before this fix
    (["Sub_a", "x", "conv"], "normalized"),                                 # a Sub alone is not enough
    (["a", "b", "c", "d", "e", "f", "g", "Sub_1", "Mul_1"], "normalized"),  # only the first 8 names count
])
def test_router_rule(names, want):
    assert router_convention(_graph_with_names(names)) == CONVENTIONS[want]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("conv")
    net = _net()
    out = {}
    for convention in CONVENTIONS:
        sym, arg, aux, norm = client_graph(*embedding_symbol(net), convention, SHAPE)
        path = str(root / f"{convention}.onnx")
        export_onnx(sym, arg, aux, path, SHAPE, input_norm=norm,
                    metadata=metadata_props(convention, SHAPE[2:], 8, "probe"))
        out[convention] = path
    return net, root, out


def test_onnx_files_say_what_they_take(exported):
    import onnxruntime as ort
    net, _, paths = exported
    x = _pixels(4, seed=1).astype(np.float32)
    want = net(mx.nd.array(x)).asnumpy()
    for convention, path in paths.items():
        model = onnx.load(path)
        props = {p.key: p.value for p in model.metadata_props}
        mean, std = CONVENTIONS[convention]
        assert (props["input_convention"], float(props["input_mean"]), float(props["input_std"])) == (
            convention, mean, std)
        assert (props["input_color_order"], props["input_size"], props["embedding_size"]) == ("RGB", "16,16", "8")
        assert router_convention(model) == (mean, std)
        assert [i.name for i in model.graph.input] == ["data"]
        doc = model.graph.input[0].doc_string
        assert ("raw RGB" in doc) if convention == "raw" else ("(x - 127.5) / 127.5" in doc)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        got = sess.run(None, {"data": (x - np.float32(mean)) / np.float32(std)})[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
        emb = FaceEmbedder.from_path(path)  # feeds what the metadata says
        assert emb.input_spec["source"] == "metadata"
        np.testing.assert_allclose(emb(x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    first = [n.op_type for n in onnx.load(paths["raw"]).graph.node[:2]]
    assert first == ["Sub", "Mul"]
    assert onnx.load(paths["normalized"]).graph.node[0].op_type == "Conv"


def test_files_without_metadata_and_bad_metadata(exported, tmp_path):
    net, root, paths = exported
    model = onnx.load(paths["raw"])
    del model.metadata_props[:]
    bare = str(tmp_path / "bare.onnx")
    onnx.save(model, bare)
    spec = onnx_input_spec(bare)  # no metadata: read as insightface reads it (node names)
    assert (spec["mean"], spec["std"], spec["source"]) == (0.0, 1.0, "node names (insightface's rule)")
    # A gluonface export from before the metadata (export.json lists the file) took raw pixels.
    old = onnx.load(paths["normalized"])
    del old.metadata_props[:]
    onnx.save(old, str(tmp_path / "old.onnx"))
    assert onnx_input_spec(str(tmp_path / "old.onnx"))["mean"] == 127.5
    (tmp_path / "export.json").write_text(json.dumps({"files": {"onnx": "old.onnx"}}))
    assert onnx_input_spec(str(tmp_path / "old.onnx"))["mean"] == 0.0
    helper.set_model_props(model, {"input_mean": "127.5", "input_std": "0"})
    onnx.save(model, str(tmp_path / "broken.onnx"))
    with pytest.raises(GluonFaceError, match="unusable input metadata.*re-export"):
        FaceEmbedder.from_path(str(tmp_path / "broken.onnx"))


def test_bgr_metadata_swaps_channels(exported, tmp_path):
    net, _, paths = exported
    model = onnx.load(paths["raw"])
    props = {p.key: p.value for p in model.metadata_props}
    helper.set_model_props(model, dict(props, input_color_order="BGR"))
    onnx.save(model, str(tmp_path / "bgr.onnx"))
    x = _pixels(2, seed=2).astype(np.float32)
    got = FaceEmbedder.from_path(str(tmp_path / "bgr.onnx"))(x)
    want = net(mx.nd.array(x[:, ::-1].copy())).asnumpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
