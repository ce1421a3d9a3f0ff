"""Inside an sbatch step: become this SLURM task's ps-lite role and exec it.

``python -m gluonface.launch.slurm_role -- WORKER_ARGV...``: task 0 is the scheduler, tasks 1..S the
servers (``DMLC_NUM_SERVER``), the rest workers; ``DMLC_NODE_HOST`` is this node's address so ps-lite
never guesses it from an unrelated interface.
"""
import os
import socket
import sys

from gluonface.launch.slurm import role_for_task, server_argv


def main(argv):
    if "--" not in argv or not argv[argv.index("--") + 1:]:
        sys.exit("usage: python -m gluonface.launch.slurm_role -- WORKER_ARGV...")
    worker = argv[argv.index("--") + 1:]
    procid = int(os.environ["SLURM_PROCID"])
    role = role_for_task(procid, int(os.environ["DMLC_NUM_SERVER"]))
    os.environ["DMLC_ROLE"] = role
    os.environ.setdefault("DMLC_NODE_HOST", socket.gethostbyname(socket.gethostname()))
    os.environ.setdefault("GLUONFACE_LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))
    target = worker if role == "worker" else server_argv(sys.executable)
    sys.stdout.flush()
    os.execvp(target[0], target)


if __name__ == "__main__":
    main(sys.argv[1:])
