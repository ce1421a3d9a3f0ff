"""Stand-ins for cluster tools that this machine and CI lack (ssh/sshd, sbatch, srun, scontrol).

Each tool is a Python script here that behaves like the real one for the options gluonface and Horovod
use, with network namespaces as hosts (see each script's docstring). ``install`` puts small wrappers
named like the tools into a directory that tests place first on PATH.
"""
import os
import shlex
import stat
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def install(bin_dir, tools, *extra_args):
    """Write executables ``bin_dir/<tool>`` that run ``standins/<tool>.py [extra_args] ARGS``.

    Returns:
        ``bin_dir`` (str), to be put first on PATH.
    """
    os.makedirs(bin_dir, exist_ok=True)
    for tool in tools:
        words = [sys.executable, os.path.join(HERE, f"{tool}.py"), *map(str, extra_args)]
        path = os.path.join(bin_dir, tool)
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"#!/bin/sh\nexec {' '.join(shlex.quote(w) for w in words)} \"$@\"\n")
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(bin_dir)
