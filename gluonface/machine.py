"""This machine's CPU and which compute paths run right on it (``gluonface doctor``, benchmark headers).

MXNet 1.9.1's oneDNN picks its kernels by instruction set (AVX2, AVX-512, AVX-512 BF16/VNNI, AMX), so the
same graph takes different code paths on different CPUs. Every path is judged here by running it and
comparing its numbers with a reference, never by the CPU's name:

* fp32 training: a conv → BatchNorm → relu → dense graph, forward and gradients, against float64;
* bf16 training: refused by design (``gluonface.precision.BF16_TRAINING_REFUSED``);
* bf16 inference: the same graph in bfloat16 against float32 (``precision.kernel_check``);
* INT8 inference: a small network quantised with oneDNN and calibrated, against float32;
* every backbone's forward and backward pass, each in a child process (a kernel crash kills only it).
"""
import os
import platform
import re
import subprocess
import sys
import textwrap

import numpy as np

# CPU flags that decide oneDNN's code paths, as /proc/cpuinfo spells them.
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512_fp16", "amx_bf16",
                  "amx_int8")
INT8_PROBE_MIN_COSINE = 0.99


def cpu_facts():
    """{'model': str, 'flags': [relevant flags present], 'cores': int} from /proc/cpuinfo (Linux)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "flags": [f for f in RELEVANT_FLAGS if f in flags], "cores": os.cpu_count()}


def cpu_line(facts=None):
    """One line naming the CPU and its relevant flags, e.g. for a benchmark table's header."""
    facts = facts or cpu_facts()
    flags = " ".join(facts["flags"]) or "no AVX2"
    amx = "" if any(f.startswith("amx") for f in facts["flags"]) else ", no AMX"
    return f"{facts['model']} ({flags}{amx}), {facts['cores']} cores"


# MXNet's engine for inference-only processes on the CPU. With the default threaded engine every operator runs
# on an engine worker thread whose OpenMP team libgomp throttles (more OpenMP threads than cores, so waiting
# threads sleep at once): each parallel region then pays a futex wake-up. Measured on 2 cores (AMD EPYC,
# AVX-512): iresnet_tiny batch 1 1.38 -> 0.25 ms per call, batch 64 8.3 -> 6.9 ms; MobileFaceNet batch 1
# 4.6 -> 3.2 ms (bench/results/export.md). The engine is chosen when libmxnet loads, so this must run first.
INFERENCE_ENGINE = "NaiveEngine"


def use_inference_engine(ctx_text="cpu"):
    """Make MXNet run operators in the calling thread, if it is not loaded yet, runs on the CPU only, and the
    user has not chosen an engine (``MXNET_ENGINE_TYPE``). For inference-only commands (eval, embed, export);
    never for training (Horovod and the kvstore overlap communication through the threaded engine).

    Returns:
        the engine MXNet will use (None: MXNet's default).
    """
    if "MXNET_ENGINE_TYPE" in os.environ or "mxnet" in sys.modules:
        return os.environ.get("MXNET_ENGINE_TYPE")
    if any(part.strip().lower().startswith("gpu") for part in str(ctx_text or "cpu").split(",")):
        return None
    os.environ["MXNET_ENGINE_TYPE"] = INFERENCE_ENGINE
    return INFERENCE_ENGINE


def mxnet_engine():
    """The engine MXNet runs (as chosen through ``MXNET_ENGINE_TYPE`` when it loaded)."""
    return os.environ.get("MXNET_ENGINE_TYPE") or "ThreadedEnginePerDevice"


def fp32_check():
    """(ok, detail): float32 kernels against float64 on the probe graph (output and every gradient)."""
    import mxnet as mx
    from gluonface.precision import _cosine, _probe_graph
    ref_out, ref_grads = _probe_graph(mx, None, mx.cpu(), dtype="float64")
    out, grads = _probe_graph(mx, None, mx.cpu())
    fwd, worst = _cosine(out, ref_out), min(_cosine(g, r) for g, r in zip(grads, ref_grads))
    ok = fwd > 0.99999 and worst > 0.9999
    return ok, f"output cosine {fwd:.6f}, worst gradient cosine {worst:.6f} to float64"


def s_run(sym, args, aux, x):
    import mxnet as mx
    x = mx.nd.array(np.asarray(x, np.float32)) if not isinstance(x, mx.nd.NDArray) else x
    return sym.bind(mx.cpu(), dict(args, data=x), aux_states=aux).forward()[0].asnumpy().astype(np.float64)


def int8_check():
    """(ok, detail): a small conv network quantised by oneDNN (calibrated) against its float32 outputs."""
    import mxnet as mx
    if not mx.runtime.Features().is_enabled("MKLDNN"):
        return False, "this MXNet build has no oneDNN (MKLDNN): no INT8 kernels"
    from mxnet.contrib.quantization import quantize_model_mkldnn
    rng = np.random.default_rng(0)
    data = mx.sym.var("data")
    h = mx.sym.Convolution(data, kernel=(3, 3), pad=(1, 1), num_filter=16, name="c1")
    h = mx.sym.Activation(mx.sym.BatchNorm(h, fix_gamma=False, name="bn1"), act_type="relu")
    h = mx.sym.Convolution(h, kernel=(3, 3), stride=(2, 2), pad=(1, 1), num_filter=32, name="c2")
    sym = mx.sym.FullyConnected(mx.sym.Activation(h, act_type="relu"), num_hidden=16, name="fc")
    arg_shapes, _, aux_shapes = sym.infer_shape(data=(8, 3, 16, 16))
    args = {n: mx.nd.array(rng.normal(0, 0.3, s)) for n, s in zip(sym.list_arguments(), arg_shapes) if n != "data"}
    aux = {n: mx.nd.array(rng.uniform(0.5, 1.5, s)) for n, s in zip(sym.list_auxiliary_states(), aux_shapes)}
    calib = rng.uniform(0, 1, (32, 3, 16, 16)).astype(np.float32)
    try:
        qsym, qarg, qaux = quantize_model_mkldnn(
            sym, args, aux, data_names=("data",), label_names=(), ctx=mx.cpu(), calib_mode="naive",
            calib_data=mx.io.NDArrayIter(calib, batch_size=8), num_calib_examples=32, quantized_dtype="auto",
            quantize_mode="smart")
        x = mx.nd.array(rng.uniform(0, 1, (8, 3, 16, 16)))

        def run(s, a, b):
            return s_run(s, a, b, x)
        ref, got = run(sym, args, aux), run(qsym, qarg, qaux)
    except mx.base.MXNetError as exc:
        from gluonface.precision import _mx_error_line
        return False, f"INT8 kernels do not run: {_mx_error_line(exc)}"
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    _PROBE["int8"] = (qsym, dict(qarg, **qaux), lambda pixels: s_run(sym, args, aux, pixels))
    return bool(cos.min() >= INT8_PROBE_MIN_COSINE), \
        f"min cosine {cos.min():.4f} to float32 (bar {INT8_PROBE_MIN_COSINE}) on a calibrated probe network"


_PROBE = {}   # int8_check's quantised probe network, for int8_runner_check


def int8_runner_check():
    """(status, detail): gluonface's INT8 runner (``gluonface.ops.int8net``) on int8_check's probe network,
    every instruction-set path this CPU runs against the others (same bytes) and against float32.

    status: 'ok', 'warn' (not built: INT8 models run on MXNet), 'fail' (wrong numbers or paths that differ).
    """
    from gluonface.ops import int8net
    ok, why = int8net.available()
    if not ok:
        return "warn", f"INT8 models run on MXNet only: {why}"
    if "int8" not in _PROBE:
        int8_check()
    if "int8" not in _PROBE:
        return "warn", "no INT8 probe network (MXNet's INT8 kernels do not run here)"
    qsym, params, float32 = _PROBE["int8"]
    # The probe was calibrated on inputs in [0, 1]: pixels 0 and 1 are values the runner and float32 share.
    pixels = np.random.default_rng(1).integers(0, 2, (8, 3, 16, 16), dtype=np.uint8)
    net = int8net.Int8Net(qsym, params, (3, 16, 16))
    outs = {}
    try:
        for isa in int8net.supported_isas():
            int8net.set_isa(isa)
            outs[isa] = net(pixels)
    finally:
        int8net.set_isa(None)
    differ = [isa for isa, o in outs.items() if not np.array_equal(o, outs["generic"])]
    if differ:
        return "fail", f"the {', '.join(differ)} path(s) give other numbers than the portable one"
    ref, got = float32(pixels), outs["generic"].astype(np.float64)
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    if cos.min() < INT8_PROBE_MIN_COSINE:
        return "fail", f"min cosine {cos.min():.4f} to float32 (bar {INT8_PROBE_MIN_COSINE}) on the probe network"
    return "ok", f"{int8net.isa()} path (this CPU runs {', '.join(outs)}; all give the same bytes; min cosine " \
                 f"{cos.min():.4f} to float32) from " \
                 f"{int8net.library_path()}"


_BACKBONE_CHILD = textwrap.dedent("""
    import sys, numpy as np, mxnet as mx
    from gluonface.models import get_model
    for name in sys.argv[1:]:
        print("start", name, flush=True)
        net = get_model(name)
        net.initialize(mx.init.Xavier(magnitude=2))
        net.hybridize(static_alloc=True)
        x = mx.nd.array(np.random.default_rng(0).uniform(0, 255, size=(2, 3, 112, 112)))
        with mx.autograd.record():
            e = net(x)
        e.backward(mx.nd.ones_like(e))
        ok = np.isfinite(e.asnumpy()).all() and e.shape == (2, 512)
        print("done" if ok else "bad", name, flush=True)
""")


def backbone_checks(names, timeout=900):
    """{name: (ok, detail)}: forward + backward at batch 2 (112x112, hybridized) of each backbone, in child
    processes; a crash names its signal and the next backbone goes on in a new child."""
    results, todo = {}, list(names)
    while todo:
        try:
            proc = subprocess.run([sys.executable, "-c", _BACKBONE_CHILD, *todo], capture_output=True, text=True,
                                  timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS="2"))
        except subprocess.TimeoutExpired:
            for name in todo:
                results[name] = (False, f"no answer within {timeout} s")
            break
        for line in proc.stdout.splitlines():
            word, _, name = line.partition(" ")
            if word in ("done", "bad"):
                results[name] = (word == "done", "forward + backward, batch 2" if word == "done"
                                 else "non-finite or mis-shaped output")
        todo = [n for n in todo if n not in results]
        if todo:   # the first unfinished one crashed the child
            # MXNet's own log lines start with a [hh:mm:ss] time stamp; the error is the last other line
            said = [l for l in proc.stderr.strip().splitlines() if not re.match(r"\[\d\d:\d\d:\d\d\]", l)]
            how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0 else
                   (said or [f"exit {proc.returncode}"])[-1][:160])
            results[todo.pop(0)] = (False, f"crashed: {how}")
    return results


def native_ops_check():
    """(status, detail): which kernels gluonface's own ops run (``gluonface.ops``), checked on a PReLU.

    status: 'ok' (native library active and its PReLU equals the formula), 'off' (the MXNet formulation runs,
    the default; the library is still loaded and checked for whoever opts in), 'warn' (not built or failed
    to load), 'fail' (the kernels give wrong numbers).
    """
    import mxnet as mx
    from gluonface.models.layers import ChannelPReLU
    from gluonface.ops.library import set_enabled, status
    info = status()
    opted_out = info["backend"] != "native" and info["reason"].startswith(("off by default", "switched off"))
    if opted_out:
        set_enabled(True)   # check what GLUONFACE_NATIVE=1 would run, then back to the user's choice
    try:
        active = status()
        if active["backend"] != "native":
            return "warn", f"MXNet formulation runs: {active['reason']}"
        act = ChannelPReLU(8)
        act.initialize()
        act.alpha.set_data(mx.nd.full((8, 1, 1, 1), 0.25))
        act.hybridize()
        x = np.random.default_rng(0).normal(size=(2, 8, 5, 7)).astype(np.float32)
        got = act(mx.nd.array(x)).asnumpy()
    finally:
        if opted_out:
            set_enabled(None if info["reason"].startswith("off by default") else False)
    want = np.maximum(x, 0) + 0.25 * np.minimum(x, 0)
    ok = bool(np.abs(got - want).max() <= 1e-6 * np.abs(want).max())
    where = f"native kernels ({active['isa']} path) from {active['path']}"
    if not ok:
        return "fail", f"{where}: PReLU differs from the formula by {np.abs(got - want).max():.2e}"
    if opted_out:
        return "off", f"MXNet formulation runs: {info['reason']}; the {where} load and compute right"
    return "ok", where