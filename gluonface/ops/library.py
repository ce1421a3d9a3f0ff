"""Finding, loading and steering ``libgluonface_ops.so``, gluonface's native operator library.

The library is built by ``make install`` (``make ops``) into this package's directory and loaded with
``mx.library.load`` on first use, never at import. When it is absent, fails to load, or is switched off,
every op in :mod:`gluonface.ops` uses its pure-MXNet formulation; :func:`status` says which is active and why.

The kernels are opt-in: ``GLUONFACE_NATIVE=1`` (read once, at the first load attempt) or
``set_enabled(True)``. On a quiet 2-core AVX-512 machine the MXNet formulation trained as fast (iresnet50,
native / MXNet 1.00x) or faster (MobileFaceNet 0.87x) than the native ops, both above PyTorch
(bench/results/native.md): MXNet reorders each custom-op input oneDNN left in its blocked layout and
dispatches an extension op more slowly than a built-in one, which costs what the kernels save. They won only
on an oversubscribed machine (1.24x). ``set_enabled(False)`` / ``GLUONFACE_NATIVE=0`` keep them off,
``set_enabled(None)`` returns to the environment's choice. :func:`set_isa` forces one instruction-set path
of the kernels (tests run every path the CPU supports).
Both switches affect graphs traced after the call; a hybridized block keeps the graph it traced.
"""
import ctypes
import os

from gluonface.errors import GluonFaceError

LIB_NAME = "libgluonface_ops.so"
OPS = ("prelu", "bn_prelu")  # what set_enabled can switch one by one
ISAS = ("generic", "avx2", "avx512")  # index = the library's instruction-set code
ENV_SWITCH = "GLUONFACE_NATIVE"

# "explicit": set_enabled chose (status then names the switch, not the default)
_state = {"tried": False, "cdll": None, "error": "", "enabled": None, "ops": frozenset(OPS), "explicit": False}


def library_path():
    """Absolute path where ``make install`` puts the library (beside this file)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), LIB_NAME)


def _env_choice():
    """True / False when ``GLUONFACE_NATIVE`` says so, None when it is unset (the default: off)."""
    value = os.environ.get(ENV_SWITCH, "").strip().lower()
    if not value:
        return None
    return value not in ("0", "off", "false", "no")


def _switched_on():
    if _state["enabled"] is None:
        # Opt-in switch, documented in ARCHITECTURE.md; the only environment read outside parallel/launch.
        _state["enabled"] = bool(_env_choice())
    return _state["enabled"]


def _amp_initialized():
    from mxnet.contrib.amp import amp
    return bool(getattr(amp, "_amp_initialized", False))


def _load():
    """Load the library once per process; returns the ctypes handle or None (reason in ``_state``).

    Nothing is loaded while switched off, so a forced fallback runs pure MXNet.
    """
    if _state["tried"] or not _switched_on():
        return _state["cdll"]
    _state["tried"] = True
    path = library_path()
    if not os.path.exists(path):
        _state["error"] = f"{path} not built; fix: run `make install` (or `make ops`) in the gluonface checkout"
        return None
    if _amp_initialized():
        # mx.library.load regenerates mx.nd / mx.sym and so drops AMP's patched operators: mixed precision
        # would then fail with "requires uniform type". The kernels are float32-only anyway.
        _state["error"] = "mixed precision (mxnet.contrib.amp) was initialised first; the float32 kernels " \
                          "are not used with AMP"
        return None
    import mxnet as mx
    try:
        mx.library.load(path, verbose=False)
        cdll = ctypes.CDLL(path)  # the same handle MXNet opened: dlopen counts references
        cdll.gluonface_ops_isa.restype = ctypes.c_int
        cdll.gluonface_ops_isa_supported.restype = ctypes.c_int
        cdll.gluonface_ops_set_isa.restype = ctypes.c_int
    except (mx.base.MXNetError, OSError, AttributeError) as exc:
        _state["error"] = f"{path} failed to load ({str(exc).strip().splitlines()[-1]}); fix: rebuild it " \
                          "with `make ops` against the installed mxnet"
        return None
    _state["cdll"] = cdll
    return cdll


def native_active(op=None):
    """True when the native kernels are loaded and enabled (loads the library on the first call).

    Args:
        op: one of ``OPS`` to ask about that op's switch too; None for the library as a whole.
    """
    if op is not None and op not in _state["ops"]:
        return False
    return _load() is not None and _switched_on()


def set_enabled(enabled):
    """Use (True) or bypass (False) the native kernels in graphs traced from now on; None: back to the
    environment's choice (``GLUONFACE_NATIVE``, off when unset).

    ``enabled`` may also name the ops to use, e.g. ``("prelu",)`` to run PReLU natively and BatchNorm with
    MXNet (benchmarks compare the two); the others run their MXNet formulation.
    """
    _state["explicit"] = enabled is not None
    if enabled is None:
        _state["enabled"], _state["ops"] = None, frozenset(OPS)
        return
    if isinstance(enabled, bool):
        _state["enabled"], _state["ops"] = enabled, frozenset(OPS)
        return
    names = frozenset(enabled)
    if not names <= set(OPS):
        raise GluonFaceError(f"unknown native ops {sorted(names - set(OPS))}; fix: choose from {', '.join(OPS)}")
    _state["enabled"], _state["ops"] = bool(names), names


def isa():
    """Name of the instruction-set path the kernels run (``'generic'``, ``'avx2'``, ``'avx512'``), or None."""
    cdll = _load() or _state["cdll"]
    return None if cdll is None else ISAS[cdll.gluonface_ops_isa()]


def supported_isas():
    """The instruction-set paths this CPU and OS can run, probed by the library itself (not by vendor)."""
    cdll = _load()
    if cdll is None:
        return ()
    return tuple(name for code, name in enumerate(ISAS) if cdll.gluonface_ops_isa_supported(code))


def set_isa(name):
    """Force one instruction-set path (``'generic'``, ``'avx2'``, ``'avx512'``) for every later kernel call."""
    cdll = _load()
    if cdll is None:
        raise GluonFaceError(f"native ops are not loaded: {_state['error']}")
    if name not in ISAS:
        raise GluonFaceError(f"unknown instruction set {name!r}; fix: use one of {', '.join(ISAS)}")
    if cdll.gluonface_ops_set_isa(ISAS.index(name)) != 0:
        raise GluonFaceError(f"this CPU cannot run the {name} kernels (it supports "
                             f"{', '.join(supported_isas())}); fix: pick a supported path")


def status():
    """What runs: ``{'backend': 'native'|'mxnet', 'isa': str|None, 'path': str, 'reason': str}``.

    ``reason`` explains a fallback (switched off, not built, failed to load, AMP first); empty when native.
    """
    cdll = _load()
    if not _switched_on():
        if _env_choice() is None and not _state["explicit"]:
            reason = (f"off by default (the MXNet formulation trains as fast or faster, bench/results/native.md); "
                      f"opt in with {ENV_SWITCH}=1 or gluonface.ops.set_enabled(True)")
        else:
            reason = f"switched off ({ENV_SWITCH}=0 or gluonface.ops.set_enabled(False))"
        return {"backend": "mxnet", "isa": isa(), "path": library_path(), "reason": reason}
    if cdll is None:
        return {"backend": "mxnet", "isa": None, "path": library_path(), "reason": _state["error"]}
    off = sorted(set(OPS) - _state["ops"])
    return {"backend": "native", "isa": isa(), "path": library_path(),
            "reason": f"ops switched off: {', '.join(off)}" if off else ""}
