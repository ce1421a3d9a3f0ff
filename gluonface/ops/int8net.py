"""gluonface's INT8 runner: a calibrated INT8 embedding network in one native call per batch.

Why: at batch 1 MXNet 1.9.1 spends a fixed ~5 us on every operator call, the same for an INT8 operator as for
a float32 one, so a small network's INT8 graph could not pull far ahead of float32 however fast oneDNN's INT8
kernels were (bench/results/export.md, *Where a batch-1 INT8 call goes*). :class:`Int8Net` reads the INT8
symbol ``gluonface export --int8`` writes (MXNet's calibrated ``_sg_mkldnn_conv`` / fully connected graph),
and runs it in ``libgluonface_int8.so`` (``csrc/int8``, built by ``make install``): uint8 tensors layer after
layer, no per-layer dispatch, VNNI where the CPU has it, AVX2 or portable code elsewhere, all giving the same
bytes.

Numbers. It keeps the file's calibration: every tensor's range (``min/max_calib_range``), hence its scale.
Weights are quantised per output channel (MXNet's INT8 convolution uses one scale per tensor); bias,
residual sums and rescaling are float32 (csrc/int8/net.h gives the exact sequence). So its embeddings are
not MXNet's INT8 bytes, but at least as close to float32 (``FaceEmbedder`` checks them against the file's
graph before using it; tests/unit/test_int8net.py checks every path against a NumPy oracle bit for bit).

Graphs it runs: calibrated quantised convolutions (groups 1 or depthwise, any kernel, stride and padding,
fused BatchNorm, relu and residual sum), quantised flatten, a quantised fully connected layer with float
output at the end, and in-graph pixel normalisation before the input quantisation (a 256-entry table): what
gluonface exports for iresnet and MobileFaceNet. The PReLU the export writes as two depthwise 1x1 layers is
fused back into the layer before it. Anything else raises :class:`Unsupported` naming the operator, and the
caller keeps MXNet. One image shares each layer between the threads asked for; a batch splits by image.
"""
import ctypes
import json
import os

import numpy as np

from gluonface.errors import GluonFaceError
from gluonface.export.graph import int_tuple

LIB_NAME = "libgluonface_int8.so"
ISAS = ("generic", "avx2", "avx512_vnni")   # index = the library's instruction-set code
DENSE_BELOW = 16   # depthwise layers on fewer channels run as dense ones (the RGB input pooling)
PIXEL_OPS = {"_minus_scalar": np.subtract, "_plus_scalar": np.add, "_mul_scalar": np.multiply,
             "_div_scalar": np.divide}   # in-graph pixel normalisation before the input quantisation

_state = {"cdll": None, "error": None}


class Unsupported(GluonFaceError):
    """The graph holds something the runner does not run; the message names it."""


def library_path():
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), LIB_NAME)


def load_library():
    """The ctypes handle, loaded once; raises GluonFaceError saying how to build it when absent."""
    if _state["cdll"] is not None:
        return _state["cdll"]
    path = library_path()
    if not os.path.exists(path):
        raise GluonFaceError(f"{path} not built; fix: run `make install` (or `make ops`) in the gluonface checkout")
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        raise GluonFaceError(f"{path} failed to load ({exc}); fix: rebuild it with `make ops`") from exc
    p, i, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    lib.gfi8_new.restype, lib.gfi8_new.argtypes = p, [i, i, i]
    lib.gfi8_free.restype, lib.gfi8_free.argtypes = None, [p]
    lib.gfi8_tensor.restype, lib.gfi8_tensor.argtypes = i, [p, i, i, i, i]
    lib.gfi8_input.restype, lib.gfi8_input.argtypes = i, [p, p, i]
    lib.gfi8_layer.restype = i
    lib.gfi8_layer.argtypes = [p, i, i, i, i, i, i, i, i, i, i, i, p, p, p, p, i, i, p, f, f, i, i]
    lib.gfi8_finalize.restype, lib.gfi8_finalize.argtypes = i, [p]
    lib.gfi8_out_dim.restype, lib.gfi8_out_dim.argtypes = i, [p]
    lib.gfi8_run.restype, lib.gfi8_run.argtypes = i, [p, p, i, i, p, i]
    lib.gfi8_profile.restype, lib.gfi8_profile.argtypes = i, [p, p, i, i, p, p]
    for name in ("gfi8_isa", "gfi8_isa_supported", "gfi8_set_isa"):
        getattr(lib, name).restype = i
    _state["cdll"] = lib
    return lib


def available():
    """(True, '') when the library loads, else (False, why)."""
    try:
        load_library()
    except GluonFaceError as exc:
        return False, str(exc)
    return True, ""


def isa():
    """Instruction-set path in use: ``generic``, ``avx2`` or ``avx512_vnni``."""
    return ISAS[load_library().gfi8_isa()]


def supported_isas():
    lib = load_library()
    return tuple(n for k, n in enumerate(ISAS) if lib.gfi8_isa_supported(k))


def set_isa(name):
    """Force one path for later calls (tests run each path the CPU supports); ``None``: the best one."""
    lib = load_library()
    if name is None:
        name = supported_isas()[-1]
    if name not in ISAS:
        raise GluonFaceError(f"unknown instruction set {name!r}; fix: use one of {', '.join(ISAS)}")
    if lib.gfi8_set_isa(ISAS.index(name)) != 0:
        raise GluonFaceError(f"this CPU cannot run the {name} path (it runs {', '.join(supported_isas())}); "
                             "fix: pick a supported one")


def tensor_scale(lo, hi):
    """(scale, zero point) of a tensor calibrated to [lo, hi]: uint8 when never negative, else int8 + 128."""
    lo, hi = float(lo), float(hi)
    if lo >= 0:
        return (255.0 / hi if hi > 0 else 1.0), 0
    m = max(-lo, hi)
    return (127.0 / m if m > 0 else 1.0), 128


def quantize_weights(w):
    """Float weights (O, ...) -> (int8 weights, per-channel scale float64): symmetric, 127 = the largest |w|."""
    w = np.asarray(w, np.float64)
    amax = np.abs(w.reshape(len(w), -1)).max(axis=1)
    scale = np.where(amax > 0, 127.0 / np.where(amax > 0, amax, 1.0), 1.0)
    q = np.clip(np.rint(w * scale.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127).astype(np.int8)
    return q, scale


def _attrs(node):
    return node.get("attrs", node.get("param", {})) or {}


def _true(text):
    return str(text).lower() in ("true", "1")


def _sub_nodes(node):
    subs = node.get("subgraphs") or []
    return [n for n in subs[0]["nodes"] if n["op"] != "null"] if subs else []


class Int8Net:
    """An INT8 symbol (``PREFIX-int8-symbol.json`` graph) planned for the native runner.

    Args:
        graph: the symbol's JSON (str, dict or an ``mx.sym.Symbol``).
        params: {name: NDArray or array} of the INT8 checkpoint.
        input_shape: (C, H, W) of one image.

    Raises:
        Unsupported: an operator or attribute the runner does not run (the message names it).

    ``layers`` keeps every layer's integer weights and float32 constants (tests recompute the network from
    them with NumPy); calling the object runs uint8 images, NCHW or NHWC, and returns float32 (N, E).
    """

    def __init__(self, graph, params, input_shape):
        if hasattr(graph, "tojson"):
            graph = graph.tojson()
        self.graph = json.loads(graph) if isinstance(graph, str) else graph
        self.params = {k: (v.asnumpy() if hasattr(v, "asnumpy") else np.asarray(v)) for k, v in params.items()}
        self.input_shape = tuple(int(v) for v in input_shape)
        self.tensors = []      # {c, h, w, scale, z}
        self.layers = []       # dicts, see _add_layer
        self.out_dim = None
        self.lut = None        # input pixel -> quantised input (None: the pixel itself)
        self._plan()
        self._lib = load_library()
        self._handle = None
        self._build()

    # ---- planning (pure Python) ------------------------------------------------------------------------

    def _tensor(self, c, h, w, scale, z):
        self.tensors.append({"c": int(c), "h": int(h), "w": int(w), "scale": float(scale), "z": int(z)})
        return len(self.tensors) - 1

    def _value(self, entry, what, node):
        src = self.graph["nodes"][entry[0]]
        if src["op"] != "null" or src["name"] not in self.params:
            raise Unsupported(f"{node['name']}: its {what} is computed, not a parameter; the INT8 runner needs "
                              "constant weights")
        return self.params[src["name"]]

    def _plan(self):
        nodes = self.graph["nodes"]
        c, h, w = self.input_shape
        self._tensor(c, h, w, 1.0, 0)            # raw pixels 0..255: scale 1, zero point 0
        entries = {}                              # (node, output) -> tensor id, or ('float',) / ('flat', id)
        for k, node in enumerate(nodes):
            op = node["op"]
            if op == "null":
                if node["name"] == "data":
                    entries[(k, 0)] = 0           # uint8 form: pixels straight in
                continue
            ins = [tuple(e[:2]) for e in node["inputs"]]
            if op in PIXEL_OPS:                   # in-graph normalisation of the pixels: folded into the input
                src = entries.get(ins[0])
                chain = () if src == 0 else (src[1] if isinstance(src, tuple) and src[0] == "pixels" else None)
                if chain is None:
                    raise Unsupported(f"{op} ({node['name']}) on a tensor inside the network")
                entries[(k, 0)] = ("pixels", chain + ((op, float(_attrs(node).get("scalar", "nan"))),))
            elif op == "_contrib_quantize_v2":
                self._input_quantisation(node, entries.get(ins[0]))
                entries[(k, 0)] = 0
            elif op == "_sg_mkldnn_conv":
                entries[(k, 0)] = self._conv(node, ins, entries)
            elif op == "_contrib_quantized_flatten":
                src = entries.get(ins[0])
                if not isinstance(src, int):
                    raise Unsupported(f"{node['name']}: flatten of an unplanned tensor")
                entries[(k, 0)] = ("flat", src)
            elif op == "_sg_mkldnn_fully_connected":
                entries[(k, 0)] = self._dense(node, ins, entries)
            elif op in ("_copy", "identity") and entries.get(ins[0]) == ("float",):
                entries[(k, 0)] = ("float",)
            else:
                raise Unsupported(f"operator {op} ({node['name']}) is not one the INT8 runner runs")
        heads = [tuple(e[:2]) for e in self.graph["heads"]]
        if len(heads) != 1 or entries.get(heads[0]) != ("float",):
            raise Unsupported("the graph's output is not a float fully connected layer (the embedding)")
        self._fuse_prelu()

    def _fuse_prelu(self):
        """gluonface's export writes PReLU as two depthwise 1x1 convolutions (``fold._lower_prelu``: MXNet's
        INT8 path has no per-channel PReLU): ``a = relu(-x)``, then ``y = x + (1 - alpha) * a``. Both become the
        producer of ``x`` applying ``alpha`` itself, before it quantises: two tensor passes and two roundings
        fewer, and ``x`` and ``a`` are never stored (they have no other readers)."""
        def pointwise(L, relu, with_sum):
            return (L["depthwise"] and L["kernel"] == (1, 1) and L["stride"] == (1, 1) and L["pad"] == (0, 0)
                    and L["relu"] == relu and (L["sum"] >= 0) == with_sum and not L["post_relu"]
                    and L["slope"] is None and L["float_weights"] is not None and not L["float_bias"].any())
        while True:
            producer = {L["out"]: i for i, L in enumerate(self.layers) if L["out"] >= 0}
            readers = {}
            for i, L in enumerate(self.layers):
                for t in {L["in"], L["sum"]} - {-1}:
                    readers.setdefault(t, []).append(i)
            for j, N in enumerate(self.layers):
                if not pointwise(N, relu=False, with_sum=True):
                    continue
                i, p = producer.get(N["in"]), producer.get(N["sum"])
                if i is None or p is None or not pointwise(self.layers[i], relu=True, with_sum=False):
                    continue
                M, P = self.layers[i], self.layers[p]
                if (M["in"] != N["sum"] or not np.all(M["float_weights"] == -1) or readers[N["in"]] != [j]
                        or sorted(readers[N["sum"]]) != sorted([i, j]) or P["slope"] is not None):
                    continue
                P["slope"] = (1.0 - N["float_weights"][:, 0]).astype(np.float32)
                P["out"], P["s_out"] = N["out"], N["s_out"]
                del self.layers[max(i, j)], self.layers[min(i, j)]
                break
            else:
                return

    def _input_quantisation(self, node, src):
        """The graph's input quantisation (after its pixel normalisation, if any) as a 256-entry table."""
        a = _attrs(node)
        lo, hi = float(a.get("min_calib_range", "nan")), float(a.get("max_calib_range", "nan"))
        chain = () if src == 0 else (src[1] if isinstance(src, tuple) and src[0] == "pixels" else None)
        if chain is None or not np.isfinite([lo, hi]).all() or self.layers or self.lut is not None:
            raise Unsupported(f"{node['name']}: a quantisation inside the network or without calibrated range; the "
                              "INT8 runner takes graphs that quantise their (normalised) pixels once, first")
        v = np.arange(256, dtype=np.float32)
        for op, scalar in chain:    # float32, as MXNet computes them
            v = PIXEL_OPS[op](v, np.float32(scalar)).astype(np.float32)
        scale, z = tensor_scale(lo, hi)
        q = np.rint(v.astype(np.float64) * scale)
        q = np.clip(q, 0, 255) if z == 0 else np.clip(q, -127, 127) + z
        self.tensors[0].update(scale=scale, z=z)
        self.lut = None if (z == 0 and np.array_equal(q, np.arange(256))) else q.astype(np.uint8)

    def _input_tensor(self, node, ins, entries, at=0):
        t = entries.get(ins[at])
        if not isinstance(t, int):
            raise Unsupported(f"{node['name']}: reads a tensor the INT8 runner did not produce")
        return t

    def _conv(self, node, ins, entries):
        a = _attrs(node)
        if not _true(a.get("quantized", "false")):
            raise Unsupported(f"{node['name']}: a float32 oneDNN convolution in the INT8 graph")
        if "min_calib_range" not in a or "max_calib_range" not in a:
            raise Unsupported(f"{node['name']}: not calibrated (no min/max_calib_range)")
        sub = _sub_nodes(node)
        conv = next((n for n in sub if n["op"] == "Convolution"), None)
        if conv is None:
            raise Unsupported(f"{node['name']}: no Convolution in the fused subgraph")
        ca = _attrs(conv)
        acts = [n for n in sub if n["op"] in ("Activation", "LeakyReLU", "clip")]
        if any(n["op"] != "Activation" or _attrs(n).get("act_type") != "relu" for n in acts):
            raise Unsupported(f"{node['name']}: a fused activation other than relu")
        kernel = int_tuple(ca.get("kernel"))
        stride = int_tuple(ca.get("stride")) or (1, 1)
        pad = int_tuple(ca.get("pad")) or (0, 0)
        if len(kernel) != 2 or any(d != 1 for d in int_tuple(ca.get("dilate")) or (1, 1)) or \
                ca.get("layout", "NCHW") not in ("NCHW", "None"):
            raise Unsupported(f"{node['name']}: only 2-D NCHW convolutions without dilation run natively")
        with_sum = _true(a.get("with_sum", "false"))
        no_bias = _true(ca.get("no_bias", "false"))
        with_act = _true(a.get("with_act", "false"))
        post_act = _true(a.get("with_postsum_act", "false"))
        t_in = self._input_tensor(node, ins, entries)
        ti = self.tensors[t_in]
        weight = np.asarray(self._value(ins[1], "weight", node), np.float64)
        bias = np.zeros(len(weight)) if no_bias else np.asarray(self._value(ins[2], "bias", node), np.float64)
        at = 2 if no_bias else 3
        if _true(a.get("with_bn", "false")):   # inference BatchNorm after the convolution: into its weights
            bn = _attrs(next(n for n in sub if n["op"] == "BatchNorm"))
            gamma, beta, mean, var = (np.asarray(self._value(ins[at + i], what, node), np.float64)
                                      for i, what in enumerate(("gamma", "beta", "moving mean", "moving var")))
            if _true(bn.get("fix_gamma", "true")):
                gamma = np.ones_like(gamma)
            k = gamma / np.sqrt(var + float(bn.get("eps", "0.001")))
            weight, bias, at = weight * k.reshape(-1, 1, 1, 1), (bias - mean) * k + beta, at + 4
        t_sum = self._input_tensor(node, ins, entries, at) if with_sum else -1
        oc, groups = int(ca.get("num_filter")), int(ca.get("num_group", "1"))
        if groups == 1:
            depthwise = False
        elif groups == ti["c"] == oc and weight.shape[1] == 1:
            depthwise = True
        else:
            raise Unsupported(f"{node['name']}: grouped convolution ({groups} groups of {ti['c']} channels)")
        oh = (ti["h"] + 2 * pad[0] - kernel[0]) // stride[0] + 1
        ow = (ti["w"] + 2 * pad[1] - kernel[1]) // stride[1] + 1
        s_out, z_out = tensor_scale(a["min_calib_range"], a["max_calib_range"])
        t_out = self._tensor(oc, oh, ow, s_out, z_out)
        if depthwise and oc < DENSE_BELOW:   # block-diagonal dense weights: the dense kernels are faster here
            full = np.zeros((oc, oc) + weight.shape[2:])
            full[np.arange(oc), np.arange(oc)] = weight[:, 0]
            weight, depthwise = full, False
        q, s_w = quantize_weights(weight)
        q = q[:, 0] if depthwise else q.transpose(0, 2, 3, 1)          # [o][kh][kw] / [o][kh][kw][i]
        self._add_layer(depthwise, t_in, t_out, t_sum, kernel, stride, pad, q, s_w, bias, with_act, post_act,
                        weight_f=weight.reshape(len(weight), -1) if depthwise else None)
        return t_out

    def _dense(self, node, ins, entries):
        a = _attrs(node)
        if not _true(a.get("quantized", "false")) or not _true(a.get("enable_float_output", "false")):
            raise Unsupported(f"{node['name']}: a fully connected layer without float output")
        sub = _sub_nodes(node)
        fc = next((n for n in sub if n["op"] == "FullyConnected"), None)
        if fc is None or len(sub) != 1:
            raise Unsupported(f"{node['name']}: a fused fully connected layer with more than the layer")
        fa = _attrs(fc)
        src = entries.get(ins[0])
        t_in = src[1] if isinstance(src, tuple) and src[0] == "flat" else src
        if not isinstance(t_in, int):
            raise Unsupported(f"{node['name']}: reads a tensor the INT8 runner did not produce")
        if not _true(fa.get("flatten", "true")) and self.tensors[t_in]["h"] * self.tensors[t_in]["w"] != 1:
            raise Unsupported(f"{node['name']}: fully connected on a 4-D input without flatten")
        ti = self.tensors[t_in]
        no_bias = _true(fa.get("no_bias", "false"))
        names = [self.graph["nodes"][e[0]]["name"] for e in ins]
        weight = self._value(ins[1], "weight", node)
        hidden = int(fa.get("num_hidden"))
        if weight.dtype == np.int8:
            # Already quantised by MXNet (one scale for the tensor): keep its bytes, no second rounding.
            lo, hi = self._range_params(names, ins, node, "weight")
            q = weight.astype(np.int8)
            s_w = np.full(hidden, 127.0 / max(abs(lo), abs(hi)))
        else:
            q, s_w = quantize_weights(weight)
        if no_bias:
            bias = np.zeros(hidden)
        else:
            b = self._value(ins[2], "bias", node)
            if b.dtype == np.int8:
                lo, hi = self._range_params(names, ins, node, "bias")
                bias = b.astype(np.float64) * (max(abs(lo), abs(hi)) / 127.0)
            else:
                bias = np.asarray(b, np.float64)
        q = q.reshape(hidden, ti["c"], ti["h"], ti["w"]).transpose(0, 2, 3, 1)
        self._add_layer(False, t_in, -1, -1, (ti["h"], ti["w"]), (1, 1), (0, 0), q, s_w, bias, False, False)
        self.out_dim = hidden
        return ("float",)

    def _range_params(self, names, ins, node, what):
        lo_name = next((n for n in names if n.endswith(f"{what}_quantize_min")), None)
        hi_name = next((n for n in names if n.endswith(f"{what}_quantize_max")), None)
        if lo_name is None or hi_name is None:
            raise Unsupported(f"{node['name']}: int8 {what} without its range")
        return float(np.ravel(self.params[lo_name])[0]), float(np.ravel(self.params[hi_name])[0])

    def _add_layer(self, depthwise, t_in, t_out, t_sum, kernel, stride, pad, q, s_w, bias, relu, post_relu,
                   weight_f=None):
        ti = self.tensors[t_in]
        terms = int(np.prod(q.shape[1:]))
        if terms * 255 * 127 > 2 ** 31 - 1 or len(q) > 4096:   # int32 sums stay exact; kMaxChannels in net.h
            raise Unsupported(f"a layer of {len(q)} outputs summing {terms} products per output; the INT8 runner "
                              "takes at most 4096 outputs and 66000 products (exact int32 sums)")
        z_in = ti["z"]
        comp = (z_in * q.reshape(len(q), -1).astype(np.int64).sum(axis=1)).astype(np.int32)
        mul = (1.0 / (ti["scale"] * s_w)).astype(np.float32)
        layer = {"depthwise": bool(depthwise), "in": t_in, "out": t_out, "sum": t_sum, "slope": None,
                 "float_weights": np.asarray(weight_f, np.float64) if weight_f is not None else None,
                 "float_bias": np.asarray(bias, np.float64),
                 "kernel": tuple(kernel), "stride": tuple(stride), "pad": tuple(pad),
                 "weights": np.ascontiguousarray(q, np.int8), "comp": comp, "mul": mul,
                 "bias": np.asarray(bias, np.float32), "relu": bool(relu), "post_relu": bool(post_relu),
                 "sum_mul": np.float32(1.0 / self.tensors[t_sum]["scale"]) if t_sum >= 0 else np.float32(0),
                 "s_out": np.float32(self.tensors[t_out]["scale"]) if t_out >= 0 else np.float32(0)}
        self.layers.append(layer)

    # ---- the native network --------------------------------------------------------------------------------

    def _build(self):
        lib = self._lib
        c, h, w = self.input_shape
        handle = lib.gfi8_new(c, h, w)
        try:
            if lib.gfi8_input(handle, None if self.lut is None else self.lut.ctypes.data, self.tensors[0]["z"]) != 0:
                raise Unsupported("the runner refused the input quantisation")
            for t in self.tensors[1:]:
                if lib.gfi8_tensor(handle, t["c"], t["h"], t["w"], t["z"]) < 0:
                    raise Unsupported(f"tensor {t} refused by the runner")
            for i, L in enumerate(self.layers):
                out_hw = (1, 1)
                code = lib.gfi8_layer(
                    handle, int(L["depthwise"]), L["in"], L["out"], L["sum"], *L["kernel"], *L["stride"], *L["pad"],
                    len(L["weights"]), L["weights"].ctypes.data, L["comp"].ctypes.data, L["mul"].ctypes.data,
                    L["bias"].ctypes.data, int(L["relu"]), int(L["post_relu"]),
                    None if L["slope"] is None else L["slope"].ctypes.data, float(L["sum_mul"]),
                    float(L["s_out"]), *out_hw)
                if code < 0:
                    raise Unsupported(f"layer {i} refused by the runner (code {code})")
            if lib.gfi8_finalize(handle) != 0:
                raise Unsupported("the runner could not plan the network's buffers")
        except Unsupported:
            lib.gfi8_free(handle)
            raise
        self._handle = handle

    def __del__(self):
        handle, self._handle = getattr(self, "_handle", None), None
        if handle:
            self._lib.gfi8_free(handle)

    def describe(self):
        """One dict per layer: kind, kernel, stride, input and output (C, H, W), multiply-adds, fused steps."""
        rows = []
        for L in self.layers:
            ti = self.tensors[L["in"]]
            to = self.tensors[L["out"]] if L["out"] >= 0 else {"c": self.out_dim, "h": 1, "w": 1}
            taps = int(np.prod(L["weights"].shape[1:]))
            fused = [name for name, on in (("relu", L["relu"]), ("sum", L["sum"] >= 0), ("relu after sum", L["post_relu"]),
                                           ("PReLU", L["slope"] is not None)) if on]
            rows.append({"kind": ("fully connected" if L["out"] < 0 else
                                  "depthwise" if L["depthwise"] else "dense"),
                         "kernel": "x".join(map(str, L["kernel"])), "stride": L["stride"][0],
                         "in": (ti["c"], ti["h"], ti["w"]), "out": (to["c"], to["h"], to["w"]),
                         "macs": int(to["c"] * to["h"] * to["w"] * taps), "fused": fused})
        return rows

    def profile(self, x, reps=200, layout="NCHW"):
        """Microseconds per layer for one image ``x`` (C, H, W) uint8, one thread, mean of ``reps`` runs."""
        x = np.ascontiguousarray(x[None] if x.ndim == 3 else x[:1], dtype=np.uint8)
        us = np.zeros(len(self.layers), np.float64)
        out = np.empty((1, self.out_dim), np.float32)
        if self._lib.gfi8_profile(self._handle, x.ctypes.data, 0 if layout == "NCHW" else 1, int(reps),
                                  out.ctypes.data, us.ctypes.data) != 0:
            raise GluonFaceError("the INT8 runner failed to profile")
        return us / reps

    def __call__(self, x, layout="NCHW", threads=1):
        """Embeddings of uint8 images ``x``: (N, C, H, W) (``layout='NCHW'``) or (N, H, W, C) (``'NHWC'``).

        Returns float32 (N, E), not normalised (as the graph's output).
        """
        c, h, w = self.input_shape
        want = (c, h, w) if layout == "NCHW" else (h, w, c)
        x = np.ascontiguousarray(x)
        if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise GluonFaceError(f"the INT8 runner takes uint8 images of shape (N, {', '.join(map(str, want))}) "
                                 f"({layout}); got {x.dtype} {x.shape}; fix: pass aligned uint8 faces")
        out = np.empty((len(x), self.out_dim), np.float32)
        code = self._lib.gfi8_run(self._handle, x.ctypes.data, len(x), 0 if layout == "NCHW" else 1,
                                  out.ctypes.data, int(threads))
        if code != 0:
            raise GluonFaceError(f"the INT8 runner failed (code {code})")
        return out
