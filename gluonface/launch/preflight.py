"""Checks run before anything starts, so a mistake is a clear error instead of a hung or garbage job."""
import os
import socket
import subprocess

from gluonface.errors import GluonFaceError

_LOCAL = ("127.0.0.1", "localhost")


def check_kvstore_type(kvstore):
    """The kvstore type must be a real dist store (never 'horovod'/'byteps', see parallel.context)."""
    from gluonface.parallel.context import DIST_KVSTORES, REFUSED_KVSTORES
    if kvstore in REFUSED_KVSTORES:
        raise GluonFaceError(f"--kvstore {kvstore}: MXNet 1.9.1 turns this name into a single-process local "
                             "store; fix: --engine horovod, or --kvstore dist_sync")
    if kvstore not in DIST_KVSTORES:
        raise GluonFaceError(f"--kvstore {kvstore!r} is not a distributed kvstore; fix: use one of "
                             f"{', '.join(DIST_KVSTORES)}")


def check_dist_kvstore_built():
    from mxnet.runtime import Features
    if not Features().is_enabled("DIST_KVSTORE"):
        raise GluonFaceError("this MXNet build has no DIST_KVSTORE; fix: install the pip wheel mxnet==1.9.1 "
                             "(built with it) or build MXNet with USE_DIST_KVSTORE=1")


def check_horovod():
    """``import horovod.mxnet`` works and Horovod has the Gloo controller (our CPU transport)."""
    from gluonface.parallel.context import import_horovod
    hvd = import_horovod()
    if not hvd.gloo_built():
        raise GluonFaceError("Horovod was built without Gloo; fix: rebuild with HOROVOD_WITH_GLOO=1")


def free_port(host="127.0.0.1"):
    """A TCP port that is free on ``host`` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port_free(port, host="127.0.0.1"):
    """Raise GluonFaceError if ``port`` cannot be bound on ``host`` (a local address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, int(port)))
        except OSError as exc:
            raise GluonFaceError(f"port {port} on {host} is in use ({exc.strerror}); fix: pass another --port "
                                 "or omit it to pick a free one") from None


def rec_candidates(prefix):
    """The files a rec ``prefix`` may mean: ``prefix`` itself, ``prefix.rec``, ``prefix/train.rec``."""
    return [prefix, prefix + ".rec", os.path.join(prefix, "train.rec")]


def check_file_on_hosts(path, hosts, starter, what="training data"):
    """The rec at ``path`` exists on every host (locally for the local starter); names every host lacking it."""
    if not path:
        return
    candidates = rec_candidates(path)
    test = ["test", "-f", candidates[0]]
    for c in candidates[1:]:
        test += ["-o", "-f", c]
    missing = []
    for host in hosts:
        if starter.name == "local" or host.name in _LOCAL:
            ok = any(os.path.isfile(c) for c in candidates)
        else:
            ok = _run(starter.remote_check(host, test)) == 0
        if not ok:
            missing.append(host.name)
    if missing:
        raise GluonFaceError(f"{what} {path} is missing on {', '.join(missing)}; fix: copy it there (same path "
                             "on every host) or put it on shared storage")


def check_versions_match(hosts, starter, python):
    """mxnet/gluonface/horovod versions are the same on every remote host as here."""
    probe = ("import importlib.metadata as m\n"
             "def v(p):\n"
             "    try:\n        return m.version(p)\n"
             "    except m.PackageNotFoundError:\n        return '-'\n"
             "print(v('mxnet'), v('gluonface'), v('horovod'))\n")
    local = None
    for host in hosts:
        out = _run(starter.remote_check(host, [python, "-c", probe]), capture=True)
        if out is None:
            raise GluonFaceError(f"cannot run {python} on {host.name}; fix: install the same environment at "
                                 "the same path on every host")
        local = local or out
        if out != local:
            raise GluonFaceError(f"versions differ: {hosts[0].name} has {local!r} (mxnet gluonface horovod) "
                                 f"but {host.name} has {out!r}; fix: install the same versions everywhere")


def _run(argv, capture=False):
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None if capture else 1
    if capture:
        return proc.stdout.decode().strip() if proc.returncode == 0 else None
    return proc.returncode
