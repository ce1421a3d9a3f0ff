"""Pre-flight for the parameter-server engine: the optimizer must survive the trip to the servers.

With ``update_on_kvstore=True`` MXNet pickles the optimizer (with its LR scheduler) to every server. A class
defined in the training script's ``__main__`` cannot be unpickled there; the server then logs a traceback,
runs *without* an optimizer (stored weights become gradient sums) and the job still exits 0. Unpickling in a
fresh interpreter, which knows only importable modules, catches exactly that case beforehand.
"""
import pickle
import subprocess
import sys
import tempfile

from gluonface.errors import GluonFaceError

_LOADER = "import pickle, sys; import mxnet; pickle.loads(sys.stdin.buffer.read())"


def check_optimizer_pickles(optimizer, python=None, timeout=120):
    """Raise GluonFaceError unless ``optimizer`` pickles here and unpickles in a fresh interpreter.

    Args:
        optimizer: an ``mx.optimizer.Optimizer`` (as it will be sent to the servers).
        python: interpreter to test with (default: this one; servers run the same).
    """
    try:
        blob = pickle.dumps(optimizer, 0)   # MXNet sends protocol 0
    except Exception as exc:  # noqa: BLE001 - any pickling failure is the user's optimizer's
        raise GluonFaceError(f"the optimizer {type(optimizer).__name__} cannot be pickled for the parameter "
                             f"servers ({exc}); fix: use dist.update_on_kvstore=false") from None
    with tempfile.TemporaryDirectory() as cwd:   # nothing importable by accident from the current dir
        proc = subprocess.run([python or sys.executable, "-c", _LOADER], input=blob, cwd=cwd,
                              capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        last = (proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["?"])[-1]
        raise GluonFaceError(
            f"the parameter servers could not unpickle the optimizer {type(optimizer).__name__} ({last}); they "
            "would silently train without it. fix: define custom optimizers and LR schedulers in an importable "
            "module (not in __main__), or set dist.update_on_kvstore=false")
