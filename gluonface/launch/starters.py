"""Process starters: how to run one planned process on its host. Same plan, different starter.

Each starter turns a ``ProcSpec`` into ``(argv, env)`` for ``subprocess.Popen`` (never a shell string built
from user data; the ssh starter quotes every word with ``shlex.quote`` because ssh hands the remote side one
command line). The supervisor starts every process in its own session/process group.
"""
import os
import shlex

from gluonface.errors import GluonFaceError
from gluonface.launch.hostfile import validate_name

_LOCAL_NAMES = ("127.0.0.1", "localhost")


class LocalStarter:
    """Run on this machine (every host must be local)."""
    name = "local"

    def command(self, spec):
        if spec.host.name not in _LOCAL_NAMES and spec.host.address not in _LOCAL_NAMES:
            raise GluonFaceError(f"host {spec.host.name!r} is not this machine; fix: use --starter ssh "
                                 "(or srun inside a SLURM allocation)")
        return list(spec.argv), dict(os.environ, **spec.env)

    def remote_check(self, host, argv):
        return list(argv)


class NetnsStarter:
    """Run inside the network namespace named like the host (``ip netns exec NAME``); needs root.

    ``ip netns exec`` execs the command in place, so the process group and signals stay ours.
    """
    name = "netns"

    def command(self, spec):
        ns = validate_name(spec.host.name, "netns")
        return ["ip", "netns", "exec", ns] + list(spec.argv), dict(os.environ, **spec.env)

    def remote_check(self, host, argv):
        return ["ip", "netns", "exec", validate_name(host.name, "netns")] + list(argv)


class SshStarter:
    """Run over ssh (key-based, no prompts); the environment travels as ``env K=V`` words.

    Killing the local ssh client does not always stop the remote process; ``-tt`` would tie it to a
    terminal but merges the streams, so remote teardown relies on the job's own failure (Horovod) or on
    the supervisor killing every worker (ps-lite servers then exit with the workers).
    """
    name = "ssh"

    def __init__(self, workdir=None, forward_env=("PYTHONPATH", "OMP_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS")):
        self.workdir = workdir or os.getcwd()
        self.forward_env = forward_env

    def _ssh(self, host):
        argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new"]
        if host.port:
            argv += ["-p", str(int(host.port))]
        return argv + [validate_name(host.name, "ssh host")]

    def command(self, spec):
        env = {k: os.environ[k] for k in self.forward_env if k in os.environ}
        env.update(spec.env)
        pairs = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(env.items()))
        args = " ".join(shlex.quote(a) for a in spec.argv)
        remote = f"cd {shlex.quote(self.workdir)} && exec env {pairs} {args}"
        return self._ssh(spec.host) + [remote], dict(os.environ)

    def remote_check(self, host, argv):
        return self._ssh(host) + [" ".join(shlex.quote(a) for a in argv)]


class SrunStarter:
    """Run as one SLURM step on the host (inside an allocation): ``srun -N1 -n1 -w HOST --overlap``."""
    name = "srun"

    def command(self, spec):
        host = validate_name(spec.host.name, "srun host")
        return (["srun", "-N1", "-n1", "-w", host, "--overlap", "--kill-on-bad-exit=1", "--export=ALL"]
                + list(spec.argv), dict(os.environ, **spec.env))

    def remote_check(self, host, argv):
        return ["srun", "-N1", "-n1", "-w", validate_name(host.name, "srun host"), "--overlap"] + list(argv)


STARTERS = {"local": LocalStarter, "netns": NetnsStarter, "ssh": SshStarter, "srun": SrunStarter}


def get_starter(name):
    """The starter registered under ``name`` (local, netns, ssh, srun)."""
    try:
        return STARTERS[name]()
    except KeyError:
        raise GluonFaceError(f"unknown starter {name!r}; fix: use one of {', '.join(STARTERS)}") from None
