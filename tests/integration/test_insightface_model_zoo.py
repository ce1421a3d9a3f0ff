"""Exported ONNX files in the real insightface package (PyPI insightface 2.1, installed by `make install`).

``insightface.model_zoo.get_model(path)`` must route our file to its recognition class, pick the input
normalisation our file was exported for, and its own preprocessing (``cv2.dnn.blobFromImages`` of BGR
crops) + onnxruntime session must give the embeddings gluonface gives on the same crops: the MXNet symbol
and ``FaceEmbedder`` on the ONNX file, for both input conventions, at batch 1 and batch N.
"""
import mxnet as mx
import numpy as np
import onnx
import pytest
from insightface.model_zoo import ArcFaceONNX, model_zoo

from gluonface.data.synthetic import SynthSpec, render_image
from gluonface.export.convention import CONVENTIONS, SUB_NODE
from gluonface.export.embedder import FaceEmbedder
from gluonface.export.run import export_model
from gluonface.models import get_model

pytestmark = pytest.mark.slow
ARCHS = ["iresnet18", "mobilefacenet", "iresnet_tiny"]  # IR stem (padded conv), MobileFaceNet, pooled stem
N = 6


def _network(name, seed=0):
    """A randomly initialised backbone whose BN scales and PReLU slopes are scaled by 0.5..2 per channel, so
    folding them matters. (Additive offsets would swamp the tiny activations of an untrained MobileFaceNet
    and make its output the same for every face, which could hide a wrong input scale.)"""
    net = get_model(name, embedding_size=64)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 112, 112)))
    rng = np.random.default_rng(seed)
    for p in net.collect_params().values():
        if p.name.endswith(("gamma", "running_var", "alpha")):
            p.set_data(p.data() * mx.nd.array(rng.uniform(0.5, 2.0, p.shape)))
    return net


@pytest.fixture(scope="module")
def crops_bgr():
    """Aligned 112x112 synthetic faces of different identities, BGR as insightface's callers hold them."""
    spec = SynthSpec(identities=N, images_per_id=1, seed=3)
    return [render_image(spec, i, 0)[0] for i in range(N)]


@pytest.fixture(scope="module", params=ARCHS)
def exported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    net = _network(request.param)
    prefixes = {}
    for convention in CONVENTIONS:
        prefixes[convention] = str(root / convention / "model")
        export_model(net, prefixes[convention], onnx=True, onnx_input=convention)
    return prefixes


def _cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("convention", sorted(CONVENTIONS))
def test_model_zoo_routes_and_embeds_like_gluonface(exported, crops_bgr, convention):
    prefix = exported[convention]
    model = model_zoo.get_model(prefix + ".onnx", providers=["CPUExecutionProvider"])
    assert isinstance(model, ArcFaceONNX) and model.taskname == "recognition"
    assert (model.input_mean, model.input_std) == CONVENTIONS[convention]
    assert model.input_size == (112, 112) and model.output_shape[1] == 64
    rgb = np.stack([c[:, :, ::-1] for c in crops_bgr])
    symbol = FaceEmbedder.from_path(prefix).embed(rgb, flip=False)          # MXNet, raw pixels in
    ours = FaceEmbedder.from_path(prefix + ".onnx").embed(rgb, flip=False)  # onnxruntime, metadata
    batch = model.get_feat(list(crops_bgr))
    single = np.concatenate([model.get_feat(c) for c in crops_bgr])
    assert batch.shape == single.shape == (N, 64)
    for got in (batch, single):
        assert _cosines(got, symbol).min() >= 0.999
        assert _cosines(got, ours).min() >= 0.999
    # The check has teeth: the crops give distinct embeddings, so a doubly normalised input would show.
    assert _cosines(symbol, np.roll(symbol, 1, axis=0)).max() < 0.999


def test_renamed_first_nodes_would_be_normalised_twice(exported, crops_bgr, tmp_path):
    """Negative control: without the Sub/Mul names insightface keys on, it feeds (x - 127.5) / 127.5 to a
    raw-pixel graph (what happened before --onnx-input): the embeddings then disagree."""
    model = onnx.load(exported["raw"] + ".onnx")
    for node in model.graph.node:
        if node.name == SUB_NODE:
            node.name = "input_centre"
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    wrong = model_zoo.get_model(str(tmp_path / "renamed.onnx"), providers=["CPUExecutionProvider"])
    assert (wrong.input_mean, wrong.input_std) == (127.5, 127.5)
    rgb = np.stack([c[:, :, ::-1] for c in crops_bgr])
    symbol = FaceEmbedder.from_path(exported["raw"]).embed(rgb, flip=False)
    assert _cosines(wrong.get_feat(list(crops_bgr)), symbol).min() < 0.99
