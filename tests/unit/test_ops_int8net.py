"""gluonface's INT8 runner (``gluonface.ops.int8net``) on a small calibrated INT8 graph made by MXNet's own
quantiser: every instruction-set path gives the same bytes as a NumPy recomputation of the plan, and the
result agrees with MXNet's INT8 executor and with float32 as closely as INT8 agrees with float32."""
import json

import mxnet as mx
import numpy as np
import pytest

from gluonface.errors import GluonFaceError
from gluonface.export.quantize import INT8_MIN_COSINE, quantize_symbol
from gluonface.ops import int8net

pytestmark = pytest.mark.cpu_paths   # MXNet's INT8 reference runs on oneDNN: again on its AVX2 path

SHAPE = (3, 19, 23)   # odd sizes: partial pixel blocks and borders everywhere


def _float_net():
    """Every layer kind the runner runs: depthwise input pooling on RGB (run as dense), 3x3 convolutions with
    padding and stride, a depthwise 3x3 on 33 channels (the depthwise kernel), residual sums with and without
    a relu after them, odd channel counts, and a float fully connected output."""
    x = mx.sym.var("data")
    h = mx.sym.Convolution(x, kernel=(2, 2), stride=(2, 2), num_filter=3, num_group=3, name="pool")
    h = mx.sym.Activation(mx.sym.Convolution(h, kernel=(3, 3), pad=(1, 1), num_filter=20, name="c1"), act_type="relu")
    h = mx.sym.Convolution(h, kernel=(3, 3), stride=(2, 2), pad=(1, 1), num_filter=33, name="c2")
    h = mx.sym.BatchNorm(h, fix_gamma=False, eps=2e-5, name="bn")   # fused into c2 by MXNet's quantiser
    # PReLU as gluonface's export writes it (fold._lower_prelu), which the runner fuses back into c2
    dw = dict(kernel=(1, 1), num_filter=33, num_group=33, no_bias=True)
    neg = mx.sym.Activation(mx.sym.Convolution(h, name="prelu_neg", **dw), act_type="relu")
    h = h + mx.sym.Convolution(neg, name="prelu_negpart", **dw)
    a = mx.sym.Convolution(h, kernel=(3, 3), pad=(1, 1), num_filter=33, num_group=33, name="dw")
    b = mx.sym.Convolution(h, kernel=(1, 1), num_filter=33, name="c3")
    h = mx.sym.Activation(b + a, act_type="relu")
    h = mx.sym.Convolution(h, kernel=(3, 3), pad=(1, 1), num_filter=17, name="c4") + \
        mx.sym.Convolution(h, kernel=(1, 1), num_filter=17, name="c5")
    return mx.sym.FullyConnected(h, num_hidden=10, name="fc")


@pytest.fixture(scope="module")
def quantised():
    sym = _float_net()
    rng = np.random.default_rng(0)
    shapes, _, _ = sym.infer_shape(data=(1,) + SHAPE)
    args = {n: mx.nd.array(rng.normal(0, 0.2 if n.endswith("weight") else 0.5, s).astype(np.float32))
            for n, s in zip(sym.list_arguments(), shapes) if n != "data"}
    args["prelu_neg_weight"] = mx.nd.full((33, 1, 1, 1), -1.0)
    args["prelu_negpart_weight"] = mx.nd.array(1 - rng.uniform(0.05, 0.4, (33, 1, 1, 1)))
    args["pool_weight"] = mx.nd.full((3, 1, 2, 2), 0.25 / 128)
    args["pool_bias"] = mx.nd.full((3,), -127.5 / 128)
    aux = {"bn_moving_mean": mx.nd.array(rng.normal(0, 0.3, 33)), "bn_moving_var": mx.nd.array(rng.uniform(0.5, 2, 33))}
    calib = rng.integers(0, 256, (64,) + SHAPE[1:] + (3,), dtype=np.uint8)
    calib[:4] = np.array([0, 255], np.uint8)[rng.integers(0, 2, calib[:4].shape)]   # the full [0, 255] range
    qsym, qarg, qaux = quantize_symbol(sym, args, aux, calib, batch_size=16)
    assert '"with_bn": "true"' in qsym.tojson()
    return sym, dict(args, **aux), qsym, dict(qarg, **qaux)


def _run_mx(sym, params, x):
    aux = {k: v for k, v in params.items() if k in sym.list_auxiliary_states()}
    args = {k: v for k, v in params.items() if k not in aux}
    ex = sym.bind(mx.cpu(), dict(args, data=mx.nd.array(x.astype(np.float32))), grad_req="null", aux_states=aux)
    return ex.forward()[0].asnumpy()


def oracle(net, x):
    """The plan recomputed with NumPy: exact integer sums, then net.h's float32 sequence."""
    t = {0: (x if net.lut is None else net.lut[x]).transpose(0, 2, 3, 1).astype(np.int64)}
    for L in net.layers:
        q, z = t[L["in"]], net.tensors[L["in"]]["z"]
        (kh, kw), (sh, sw), (ph, pw) = L["kernel"], L["stride"], L["pad"]
        qp = np.pad(q, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=z)
        oh, ow = (qp.shape[1] - kh) // sh + 1, (qp.shape[2] - kw) // sw + 1
        w = L["weights"].astype(np.int64)
        acc = 0
        for ky in range(kh):
            for kx in range(kw):
                patch = qp[:, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw, :]
                acc = acc + (patch * w[:, ky, kx] if L["depthwise"] else patch @ w[:, ky, kx, :].T)
        r = (acc - L["comp"]).astype(np.float32) * L["mul"]
        r = r + L["bias"]
        if L["out"] < 0:
            return r.reshape(len(x), -1)
        if L["relu"]:
            r = np.maximum(r, np.float32(0))
        if L["sum"] >= 0:
            r = r + (t[L["sum"]] - net.tensors[L["sum"]]["z"]).astype(np.float32) * L["sum_mul"]
        if L["post_relu"]:
            r = np.maximum(r, np.float32(0))
        if L["slope"] is not None:
            r = np.where(r > 0, r, r * L["slope"])
        v = np.clip(r * L["s_out"], np.float32(-512), np.float32(512))
        t[L["out"]] = np.clip(np.rint(v).astype(np.int64) + net.tensors[L["out"]]["z"], 0, 255)
    raise AssertionError("no float output layer")


def _cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture()
def every_path():
    yield int8net.supported_isas()
    int8net.set_isa(None)


def test_every_path_equals_the_numpy_plan_byte_for_byte(quantised, every_path):
    _, _, qsym, qparams = quantised
    net = int8net.Int8Net(qsym, qparams, SHAPE)
    kinds = [(L["depthwise"], L["relu"], L["sum"] >= 0, L["post_relu"]) for L in net.layers]
    assert (True, False, False, False) in kinds                          # the depthwise kernel ran
    assert sum(L["slope"] is not None for L in net.layers) == 1 and len(net.layers) == 8   # PReLU fused
    assert any(k[2] and not k[3] for k in kinds) and any(k[2] and k[3] for k in kinds)   # sums, relu after
    assert net.layers[0]["weights"].shape == (3, 2, 2, 3)               # RGB pooling as a dense layer
    x = np.random.default_rng(1).integers(0, 256, (5,) + SHAPE, dtype=np.uint8)
    want = oracle(net, x)
    assert "generic" in every_path and len(every_path) >= 2   # x86-64 CI machines run AVX2 at least
    for isa in every_path:
        int8net.set_isa(isa)
        got = net(x)
        np.testing.assert_array_equal(got, want, err_msg=isa)
        np.testing.assert_array_equal(net(x, threads=2), want, err_msg=f"{isa}, 2 threads")
        np.testing.assert_array_equal(net(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), layout="NHWC"), want)
        np.testing.assert_array_equal(net(x[2:3]), want[2:3])
        for threads in (2, 3):   # one image: threads share every layer (bands of rows or channel blocks)
            np.testing.assert_array_equal(net(x[2:3], threads=threads), want[2:3], err_msg=f"{isa}, {threads}")


def test_agrees_with_mxnet_int8_and_float32(quantised):
    sym, args, qsym, qparams = quantised
    net = int8net.Int8Net(qsym, qparams, SHAPE)
    x = np.random.default_rng(2).integers(0, 256, (16,) + SHAPE, dtype=np.uint8)
    got, mx_int8, fp32 = net(x), _run_mx(qsym, qparams, x), _run_mx(sym, args, x)
    assert _cos(got, fp32).min() >= INT8_MIN_COSINE
    # at least as close to float32 as MXNet's INT8 (weights per channel here, per tensor there: the BatchNorm
    # folded into c2 scales its channels apart, which costs MXNet's per-tensor weights more)
    assert _cos(got, fp32).mean() >= _cos(mx_int8, fp32).mean() - 1e-3
    assert _cos(got, mx_int8).min() >= 0.95   # two approximations of one network


def test_unsupported_graphs_name_the_operator(quantised):
    _, _, qsym, qparams = quantised
    graph = json.loads(qsym.tojson())
    for node in graph["nodes"]:
        if node["op"] == "_sg_mkldnn_conv":
            node["op"] = "_sg_mkldnn_deconv"
            break
    with pytest.raises(int8net.Unsupported, match="_sg_mkldnn_deconv"):
        int8net.Int8Net(json.dumps(graph), qparams, SHAPE)
    fp32 = _float_net()
    with pytest.raises(int8net.Unsupported, match="Convolution"):
        int8net.Int8Net(fp32, {}, SHAPE)
    graph = json.loads(qsym.tojson())   # a second quantisation, inside the network
    conv = next(i for i, n in enumerate(graph["nodes"]) if n["op"] == "_sg_mkldnn_conv")
    graph["nodes"].append({"op": "_contrib_quantize_v2", "name": "inner_quantize", "inputs": [[conv, 0, 0]],
                           "attrs": {"min_calib_range": "-1.0", "max_calib_range": "1.0"}})
    graph["heads"] = [[len(graph["nodes"]) - 1, 0, 0]]
    with pytest.raises(int8net.Unsupported, match="inner_quantize: a quantisation inside the network"):
        int8net.Int8Net(json.dumps(graph), qparams, SHAPE)


def test_normalised_input_becomes_a_table(quantised):
    """A graph that normalises its pixels in float32 before quantising them (MobileFaceNet's export: its
    first convolution is padded, so (x - 127.5) / 128 stays in the graph) runs with a 256-entry table."""
    sym, args, _, _ = quantised
    norm = mx.sym.var("data")
    norm = (norm - 127.5) * 0.0078125
    net_sym = sym(data=norm)
    args = dict(args, pool_weight=mx.nd.full((3, 1, 2, 2), 0.25), pool_bias=mx.nd.zeros((3,)))
    aux = {k: args.pop(k) for k in list(args) if k.startswith("bn_moving")}
    calib = np.random.default_rng(3).integers(0, 256, (32,) + SHAPE[1:] + (3,), dtype=np.uint8)
    qsym, qarg, qaux = quantize_symbol(net_sym, args, aux, calib, batch_size=16)
    args.update(aux)
    assert "_minus_scalar" in qsym.tojson()
    net = int8net.Int8Net(qsym, dict(qarg, **qaux), SHAPE)
    assert net.lut is not None and net.tensors[0]["z"] == 128 and net.lut[0] < net.lut[128] < net.lut[255]
    x = np.random.default_rng(4).integers(0, 256, (6,) + SHAPE, dtype=np.uint8)
    got = net(x)
    np.testing.assert_array_equal(got, oracle(net, x))
    np.testing.assert_array_equal(net(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), layout="NHWC"), got)
    assert _cos(got, _run_mx(net_sym, args, x)).min() >= INT8_MIN_COSINE


def test_bad_input_is_refused_with_the_fix(quantised):
    _, _, qsym, qparams = quantised
    net = int8net.Int8Net(qsym, qparams, SHAPE)
    with pytest.raises(GluonFaceError, match=r"uint8 images of shape \(N, 3, 19, 23\).*fix:"):
        net(np.zeros((2,) + SHAPE, np.float32))
    with pytest.raises(GluonFaceError, match=r"\(N, 19, 23, 3\) \(NHWC\)"):
        net(np.zeros((2,) + SHAPE, np.uint8), layout="NHWC")
    with pytest.raises(GluonFaceError, match="unknown instruction set"):
        int8net.set_isa("sse9")


def test_python_threads_share_one_network(quantised):
    """ctypes releases the GIL during a call: two Python threads on one network must not share its buffers."""
    import threading
    _, _, qsym, qparams = quantised
    net = int8net.Int8Net(qsym, qparams, SHAPE)
    xs = [np.random.default_rng(10 + i).integers(0, 256, (3,) + SHAPE, dtype=np.uint8) for i in range(4)]
    want = [net(x) for x in xs]
    bad = []

    def work(i):
        for _ in range(200):
            if not np.array_equal(net(xs[i], threads=1 + i % 2), want[i]):
                bad.append(i)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad
