"""Entry point of ps-lite scheduler and server processes: ``python -m gluonface.dist.server``.

Importing MXNet with ``DMLC_ROLE=server`` (or ``scheduler``) runs the role's blocking loop inside
``import mxnet`` and exits the interpreter when the workers finish (MXNet's ``kvstore_server`` module);
nothing after the import runs. Importing ``gluonface`` first makes the project's optimizers and LR
schedulers importable when the servers unpickle the workers' optimizer.
"""
import os
import sys

if __name__ == "__main__":
    role = os.environ.get("DMLC_ROLE")
    if role not in ("server", "scheduler"):
        sys.exit(f"gluonface.dist.server: DMLC_ROLE={role!r}; this entry point is for 'server' or "
                 "'scheduler' processes started by `gluonface launch`")
    import gluonface  # noqa: F401  (see module docstring)
    import mxnet  # noqa: F401  (runs the server/scheduler loop, then exits)
    sys.exit(f"gluonface.dist.server: MXNet returned without running the {role} loop "
             "(is this MXNet built with DIST_KVSTORE?)")
