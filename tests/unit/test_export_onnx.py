"""ONNX graph fixes on a block using the layers MXNet's exporter mistranslates: nn.PReLU after a conv (slope
broadcast), nn.PReLU after a Dense (must stay 1-D), BatchNorm with fix_gamma=True and gamma != 1."""
import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from gluonface.export.onnx import export_onnx
from gluonface.export.symbol import embedding_symbol, fixed_gamma_names
from tolerance import assert_close_scaled


class _Net(nn.HybridBlock):
    def __init__(self):
        super().__init__(prefix="probe_")
        with self.name_scope():
            self.conv = nn.Conv2D(6, 3, strides=2, padding=1, use_bias=False)
            self.bn = nn.BatchNorm(scale=False)          # fix_gamma=True
            self.act = nn.PReLU(in_channels=6)
            self.fc = nn.Dense(10)
            self.act2 = nn.PReLU(in_channels=10)
            self.bn2 = nn.BatchNorm(scale=False)

    def hybrid_forward(self, F, x):
        x = (x - 127.5) * 0.0078125
        return self.bn2(self.act2(self.fc(self.act(self.bn(self.conv(x))))))


@pytest.fixture
def net():
    net = _Net()
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 16, 16)))
    rng = np.random.default_rng(0)
    for p in net.collect_params().values():
        # gammas far from 1: MXNet ignores them (fix_gamma), a naive ONNX export would not.
        lo, hi = (0.5, 3.0) if p.name.endswith(("gamma", "var")) else (-0.5, 0.5)
        p.set_data(mx.nd.array(rng.uniform(lo, hi, p.shape)))
    return net


def test_fixed_gamma_detection(net):
    sym, arg, _ = embedding_symbol(net)
    names = fixed_gamma_names(sym)
    assert sorted(names) == sorted([net.bn.gamma.name, net.bn2.gamma.name])
    assert all(np.all(arg[n].asnumpy() == 1.0) for n in names)


def test_onnx_matches_mxnet_with_prelu_and_fixed_gamma(net, tmp_path):
    import onnx
    import onnxruntime as ort
    # The fixture is meaningful: the block holds gammas far from 1, which MXNet's BatchNorm ignores (and
    # overwrites with 1 on the next forward pass).
    assert np.abs(net.bn.gamma.data().asnumpy() - 1).max() > 0.1
    sym, arg, aux = embedding_symbol(net)
    path = export_onnx(sym, arg, aux, str(tmp_path / "m.onnx"), input_shape=(1, 3, 16, 16))
    model = onnx.load(path)
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    slopes = {n.name: inits[n.input[1]] for n in model.graph.node if n.op_type == "PRelu"}
    assert sorted(slopes.values()) == [[6, 1, 1], [10]]
    assert [i.name for i in model.graph.input] == ["data"]
    assert model.opset_import[0].version == 13
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).uniform(0, 255, (3, 3, 16, 16)).astype(np.float32)
    ref = net(mx.nd.array(x)).asnumpy()
    out = sess.run(None, {"data": x})[0]
    assert sess.get_outputs()[0].name == "fc1"
    assert_close_scaled(out, ref)
