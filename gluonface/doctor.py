"""Environment checks for a gluonface job: what is installed, what is built in, and how to fix what is not.

`probe()` gathers facts (versions, build features, devices, disk) as a JSON-able dict; `checks(facts)` turns
them into verdicts, each with a fix; `compare_hosts` checks that several hosts agree on the versions that
must match for a distributed job.
"""
import importlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass

MXNET_VERSION = "1.9.1"
HOROVOD_VERSION = "0.28.1"
MTCNN_WEIGHTS = ("pnet.lz4", "rnet.lz4", "onet.lz4")
MIN_FREE_GB = 5.0
# Versions that must be identical on every host of one job (a mismatch breaks pickled optimizers,
# kvstore protocol or Horovod's collective layout).
MUST_MATCH = ("python", "mxnet", "numpy", "horovod", "gluonface")


@dataclass(frozen=True)
class Check:
    """One verdict. status is 'ok', 'warn' or 'fail'; fix says what to do when it is not ok."""
    name: str
    status: str
    detail: str
    fix: str = ""


def _version(module_name):
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is a finding, not a crash
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]
    return getattr(module, "__version__", "unknown"), ""


def _mxnet_facts():
    version, error = _version("mxnet")
    facts = {"mxnet": version, "mxnet_error": error, "features": {}, "gpus": 0}
    if version is None:
        return facts
    import mxnet as mx
    from mxnet.runtime import Features
    feats = Features()
    for key in ("CUDA", "CUDNN", "NCCL", "DIST_KVSTORE", "MKLDNN", "OPENCV", "OPENMP", "INT64_TENSOR_SIZE"):
        facts["features"][key] = bool(feats.is_enabled(key)) if key in feats else False
    try:
        facts["gpus"] = int(mx.context.num_gpus())
    except Exception:  # CPU builds without a driver raise here on some versions
        facts["gpus"] = 0
    return facts


def _path_facts(backbones):
    """{path: {'status': ok|off|fail, 'detail': str}} for the compute paths of ``gluonface.machine``."""
    from gluonface import machine
    from gluonface.precision import BF16_TRAINING_REFUSED, kernel_check
    paths = {}
    checks = [("fp32 train", machine.fp32_check), ("bf16 infer", lambda: kernel_check("bf16")),
              ("INT8 infer", machine.int8_check)]
    for name, check in checks:
        try:
            ok, detail = check()
        except Exception as exc:  # a path that errors is a finding, not a doctor crash
            ok, detail = False, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        # bf16 / INT8 kernels that do not exist on this CPU turn the path off; a wrong result is a failure.
        missing = not ok and "do not run" in detail
        paths[name] = {"status": "ok" if ok else ("off" if missing else "fail"), "detail": detail}
    try:
        status, detail = machine.native_ops_check()
    except Exception as exc:
        status, detail = "fail", f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    paths["native ops"] = {"status": status, "detail": detail}
    try:
        status, detail = machine.int8_runner_check()
    except Exception as exc:
        status, detail = "fail", f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    paths["INT8 runner"] = {"status": status, "detail": detail}
    paths["bf16 train"] = {"status": "off", "detail": "refused by design: " + BF16_TRAINING_REFUSED.split(": ", 1)[1]
                           .split(". fix:")[0]}
    if backbones:
        from gluonface.models import list_models
        for name, (ok, detail) in machine.backbone_checks(list_models()).items():
            paths[f"forward {name}"] = {"status": "ok" if ok else "fail", "detail": detail}
    return paths


def _horovod_facts():
    facts = {"horovod": None, "horovod_error": "", "horovod_build": {}}
    try:
        import horovod
        import horovod.mxnet as hvd
    except Exception as exc:
        facts["horovod_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return facts
    facts["horovod"] = horovod.__version__
    for key in ("gloo_built", "mpi_built", "nccl_built", "ddl_built", "ccl_built", "cuda_built"):
        fn = getattr(hvd, key, None)
        try:
            facts["horovod_build"][key.replace("_built", "")] = bool(fn()) if fn else False
        except Exception:
            facts["horovod_build"][key.replace("_built", "")] = False
    return facts


def _mtcnn_weight_files():
    """MTCNN weight files found where the detector looks for them (the `mtcnn` wheel), and an error text."""
    try:
        from gluonface.align.nets import mtcnn_weights_dir
        wdir = mtcnn_weights_dir()
    except Exception as exc:  # GluonFaceError (no wheel) or a broken mxnet import
        return [], str(exc)
    return [os.path.join(wdir, f) for f in MTCNN_WEIGHTS if os.path.isfile(os.path.join(wdir, f))], ""


def probe(run_dir=".", paths=False, backbones=False):
    """Facts about this interpreter and machine, as a JSON-able dict.

    ``paths`` runs the compute-path checks (fp32 train, bf16 infer, INT8 infer: about a second);
    ``backbones`` adds a forward + backward of every backbone, each in a child process (a minute or so)."""
    from gluonface.machine import cpu_facts
    facts = {"host": platform.node(), "python": platform.python_version(), "executable": sys.executable,
             "cpu": cpu_facts()}
    facts["numpy"], facts["numpy_error"] = _version("numpy")
    facts.update(_mxnet_facts())
    facts.update(_horovod_facts())
    facts["gluoncv"], facts["gluoncv_error"] = _version("gluoncv")
    facts["torch_installed"] = importlib.util.find_spec("torch") is not None
    facts["onnx"], _ = _version("onnx")
    facts["onnxruntime"], _ = _version("onnxruntime")
    facts["gluonface"], _ = _version("gluonface")
    facts["mtcnn_weights"], facts["mtcnn_error"] = _mtcnn_weight_files()
    target = os.path.abspath(run_dir)
    while not os.path.exists(target):
        target = os.path.dirname(target)
    facts["run_dir"] = os.path.abspath(run_dir)
    facts["free_gb"] = round(shutil.disk_usage(target).free / 2**30, 1)
    if paths and facts["mxnet"] is not None:
        facts["paths"] = _path_facts(backbones)
    return facts


def _numpy_check(f):
    if f["numpy"] is None:
        return Check("numpy", "fail", f["numpy_error"], "pip install 'numpy>=1.21,<1.24'")
    major, minor = (int(x) for x in f["numpy"].split(".")[:2])
    if (major, minor) >= (1, 24):
        return Check("numpy", "fail", f"numpy {f['numpy']}: MXNet 1.9.1 uses np.bool, removed in 1.24",
                     "pip install 'numpy>=1.21,<1.24'")
    return Check("numpy", "ok", f["numpy"])


def _mxnet_checks(f):
    if f["mxnet"] is None:
        yield Check("mxnet", "fail", f["mxnet_error"],
                    "pip install mxnet==1.9.1 (GPU hosts: mxnet-cu117==1.9.1); with numpy<1.24")
        return
    status = "ok" if f["mxnet"] == MXNET_VERSION else "warn"
    yield Check("mxnet", status, f["mxnet"], "" if status == "ok" else f"pip install mxnet=={MXNET_VERSION}")
    feats = f["features"]
    yield Check("mxnet DIST_KVSTORE", "ok" if feats.get("DIST_KVSTORE") else "fail",
                "parameter-server training " + ("available" if feats.get("DIST_KVSTORE") else "missing"),
                "install the PyPI mxnet wheel, which is built with DIST_KVSTORE")
    yield Check("mxnet oneDNN (MKLDNN)", "ok" if feats.get("MKLDNN") else "warn",
                "oneDNN CPU kernels and INT8 export " + ("available" if feats.get("MKLDNN") else "missing"),
                "install the PyPI mxnet wheel (built with MKLDNN) for fast CPU training and INT8 export")
    cuda = feats.get("CUDA")
    if f["gpus"] and not cuda:
        yield Check("mxnet CUDA", "warn", f"{f['gpus']} GPU(s) visible but mxnet is a CPU build",
                    "pip uninstall mxnet && pip install mxnet-cu117==1.9.1")
    else:
        yield Check("GPUs", "ok", f"{f['gpus']} visible, CUDA build: {bool(cuda)}, NCCL: {bool(feats.get('NCCL'))}")


_PATH_FIXES = {
    "fp32 train": "float32 kernels disagree with float64: reinstall the CPU wheel (pip install --force-reinstall "
                  "mxnet==1.9.1) and report this CPU",
    "bf16 infer": "keep float32 inference on this CPU (bfloat16 kernels need AVX-512)",
    "INT8 infer": "deploy the float32 model on this CPU (INT8 needs the oneDNN CPU wheel)",
    "bf16 train": "train in float32 (train.amp=off or auto), or float16 on a GPU",
    "native ops": "run `make install` (builds gluonface/ops/libgluonface_ops.so with g++ and OpenMP); the "
                  "MXNet formulation (the default) runs meanwhile, same results",
}


def _path_checks(f):
    if "cpu" in f:
        from gluonface.machine import cpu_line
        yield Check("CPU", "ok", cpu_line(f["cpu"]))
    for name, p in f.get("paths", {}).items():
        fix = _PATH_FIXES.get(name, "train another backbone on this machine and report the crash with "
                                    "`gluonface doctor` output")
        yield Check(name, p["status"], p["detail"], fix)


def _horovod_check(f):
    if f["horovod"] is None:
        return Check("horovod", "warn", f"import horovod.mxnet failed: {f['horovod_error']}",
                     "make install (builds horovod==0.28.1 with HOROVOD_WITH_MXNET=1 HOROVOD_WITH_GLOO=1 "
                     "HOROVOD_WITHOUT_MPI=1 ... pip install --no-build-isolation, after mxnet)")
    build = f["horovod_build"]
    controllers = [k for k in ("gloo", "mpi") if build.get(k)]
    ops = [k for k in ("gloo", "mpi", "nccl", "ddl", "ccl") if build.get(k)]
    detail = f"{f['horovod']} with MXNet; controllers: {', '.join(controllers) or 'none'}; ops: {', '.join(ops) or 'none'}"
    if not controllers:
        return Check("horovod", "fail", detail, "rebuild horovod with HOROVOD_WITH_GLOO=1")
    if f["gpus"] and not build.get("nccl"):
        return Check("horovod", "warn", detail + " (GPUs present but no NCCL)",
                     "rebuild with HOROVOD_GPU_OPERATIONS=NCCL on GPU hosts")
    return Check("horovod", "ok", detail)


def checks(f, min_free_gb=MIN_FREE_GB):
    """Verdicts for one host's facts (from `probe`)."""
    out = [Check("python", "ok" if (3, 8) <= tuple(map(int, f["python"].split(".")[:2])) <= (3, 11) else "fail",
                 f["python"], "use Python 3.8-3.11 (numpy<1.24 has no wheels for 3.12)")]
    out.append(_numpy_check(f))
    out.extend(_mxnet_checks(f))
    out.extend(_path_checks(f))
    out.append(_horovod_check(f))
    if f["gluoncv"] is None:
        fix = ("uninstall torch from this environment (gluoncv fails to import next to it)" if f["torch_installed"]
               else "pip install --no-deps gluoncv==0.10.5.post0")
        out.append(Check("gluoncv", "warn", f["gluoncv_error"], fix))
    else:
        out.append(Check("gluoncv", "ok", f"{f['gluoncv']} (model-zoo backbones, LR schedules)"))
    n = len(f["mtcnn_weights"])
    out.append(Check("MTCNN weights", "ok" if n == 3 else "warn",
                     f"{n}/3 files" + (f" in {os.path.dirname(f['mtcnn_weights'][0])}" if n else ""),
                     "pip install --no-deps mtcnn==1.0.0 joblib lz4 (only its weight files are read)"))
    both = f["onnx"] and f["onnxruntime"]
    out.append(Check("onnx/onnxruntime", "ok" if both else "warn",
                     f"onnx {f['onnx']}, onnxruntime {f['onnxruntime']}",
                     "pip install onnx onnxruntime (needed by gluonface export --onnx)"))
    out.append(Check("disk", "ok" if f["free_gb"] >= min_free_gb else "warn",
                     f"{f['free_gb']} GB free under {f['run_dir']}",
                     f"free space or choose another run directory (>= {min_free_gb} GB advised)"))
    return out


def remote_probe(host, python="python3", ssh=("ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"),
                 timeout=60):
    """Run `gluonface doctor --json` on `host` over ssh; returns (facts or None, error text)."""
    argv = [*ssh, host, python, "-m", "gluonface", "doctor", "--json"]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if res.returncode not in (0, 1):
        return None, (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
    try:
        return json.loads(res.stdout), ""
    except json.JSONDecodeError:
        return None, "did not print doctor JSON (is gluonface installed there?)"


def compare_hosts(facts_by_host):
    """Checks that the versions in MUST_MATCH agree across hosts (facts_by_host: {host: facts or None})."""
    out = []
    reachable = {h: f for h, f in facts_by_host.items() if f is not None}
    for key in MUST_MATCH:
        values = {h: f.get(key) for h, f in reachable.items()}
        distinct = sorted(set(map(str, values.values())))
        if len(distinct) > 1:
            detail = ", ".join(f"{h}={v}" for h, v in values.items())
            out.append(Check(f"same {key}", "fail", detail, f"install the same {key} version on every host"))
        elif distinct:
            out.append(Check(f"same {key}", "ok", f"{distinct[0]} on {len(values)} host(s)"))
    return out


def _print_table(title, rows):
    print(title)
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "off": "off "}
    for c in rows:
        print(f"  [{marks[c.status]}] {c.name:<24} {c.detail}")
        if c.status not in ("ok", "off") and c.fix or c.status == "off" and c.fix and c.name.endswith("train"):
            print(f"         fix: {c.fix}")


def run_doctor(run_dir=".", hosts_file=None, remote_python="python3", as_json=False, quick=False):
    """Probe this host (and the hosts of `hosts_file` over ssh), print the verdicts; 1 if any check fails.

    ``quick`` skips every backbone's forward pass (the other compute paths take about a second)."""
    facts = probe(run_dir, paths=True, backbones=not (quick or as_json))
    if as_json:
        print(json.dumps(facts))
        return 0
    rows = checks(facts)
    _print_table(f"gluonface doctor: {facts['host']} ({facts['executable']})", rows)
    failed = any(c.status == "fail" for c in rows)
    if hosts_file:
        from gluonface.launch.hostfile import parse_hostfile
        by_host = {}
        for entry in parse_hostfile(hosts_file):
            host, port = entry.name, entry.port
            ssh = ("ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10") + (("-p", str(port)) if port else ())
            remote, error = remote_probe(host, python=remote_python, ssh=ssh)
            by_host[host] = remote
            if remote is None:
                host_rows = [Check("reachable", "fail", error,
                                   f"check `ssh {host}` works without a password and gluonface is installed there")]
            else:
                host_rows = [c for c in checks(remote) if c.status != "ok"] or [Check("all checks", "ok", "")]
            _print_table(f"host {host}", host_rows)
            failed |= any(c.status == "fail" for c in host_rows)
        rows = compare_hosts({facts["host"]: facts, **by_host})
        _print_table("versions across hosts", rows)
        failed |= any(c.status == "fail" for c in rows)
    print("result:", "FAIL" if failed else "ok")
    return 1 if failed else 0
