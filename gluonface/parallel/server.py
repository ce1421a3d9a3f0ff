"""Entry point of ps-lite scheduler and server processes: ``python -m gluonface.parallel.server``.

Importing MXNet with ``DMLC_ROLE=server`` (or ``scheduler``) runs the role's blocking loop inside
``import mxnet`` and exits the interpreter when the workers finish (MXNet's ``kvstore_server`` module);
nothing after the import runs. So everything the servers may need to unpickle the workers' optimizer
(gluonface's optimizers, gluoncv's LR schedulers) is imported first with the role hidden, and only then is
the server loop started: a server that cannot unpickle the optimizer logs an error and runs with no
updater, and the job would silently train garbage. Under ``gluonface launch`` the process sends heartbeats
(phase ``serving``) from a thread while MXNet's loop runs: the launcher sees a frozen server, and a server
whose launcher was killed leaves by itself (``gluonface.parallel.heartbeat``).
"""
import os
import sys

if __name__ == "__main__":
    role = os.environ.get("DMLC_ROLE")
    if role not in ("server", "scheduler"):
        sys.exit(f"gluonface.parallel.server: DMLC_ROLE={role!r}; this entry point is for 'server' or "
                 "'scheduler' processes started by `gluonface launch`")
    del os.environ["DMLC_ROLE"]             # import MXNet (and what imports it) without starting the loop
    import mxnet  # noqa: F401
    if role == "server":                    # the scheduler never sees an optimizer
        import gluoncv  # noqa: F401  (LR schedulers pickled inside optimizers)
        import gluonface.engine  # noqa: F401
    os.environ["DMLC_ROLE"] = role
    from gluonface.parallel.heartbeat import start_heartbeat
    start_heartbeat().phase("serving", now=True)   # liveness (no steps here) and the dead-man switch
    from mxnet.kvstore.kvstore_server import _init_kvstore_server_module
    _init_kvstore_server_module()           # runs the server/scheduler loop, then exits
    sys.exit(f"gluonface.parallel.server: MXNet returned without running the {role} loop "
             "(is this MXNet built with DIST_KVSTORE?)")
