"""Process starters: how to run one planned process on its host. Same plan, different starter.

Each starter turns a ``ProcSpec`` into ``(argv, env)`` for ``subprocess.Popen`` (never a shell string built
from user data; the ssh starter quotes every word with ``shlex.quote`` because ssh hands the remote side one
command line), and runs a command on a host (``remote_check``). Every process of a launch carries
``GLUONFACE_JOB=<id>`` in its environment, and so do its children (data-loader workers, Horovod's
workers under horovodrun). The supervisor starts every process in its own session/process group and
signals those groups to stop a job; it also runs each host's ``cleanup_commands``, which stop every
process there that carries the tag: the ones a local signal cannot reach (ssh, srun) and the ones that
left their group (Horovod's workers run in sessions of their own).
"""
import os
import shlex
import uuid

from gluonface.errors import GluonFaceError
from gluonface.launch.hostfile import validate_name

_LOCAL_NAMES = ("127.0.0.1", "localhost")
JOB_VAR = "GLUONFACE_JOB"


class _Starter:
    def __init__(self, job_id=None):
        self.job_id = job_id or uuid.uuid4().hex[:12]

    def _tagged(self, spec):
        """The environment of ``spec`` on this machine, with the launch's tag."""
        return dict(os.environ, **spec.env, **{JOB_VAR: self.job_id})

    def cleanup_commands(self, hosts, grace):
        """One command per host that stops every process of this launch there (TERM and CONT, up to
        ``grace`` seconds, then KILL), found by the ``GLUONFACE_JOB`` tag in ``/proc/PID/environ``."""
        script = _REMOTE_STOP.format(tag=shlex.quote(f"{JOB_VAR}={self.job_id}"), steps=max(1, int(grace + 0.999)))
        return [self.remote_check(h, ["sh", "-c", script]) for h in hosts]


class LocalStarter(_Starter):
    """Run on this machine (every host must be local)."""
    name = "local"

    def command(self, spec):
        if spec.host.name not in _LOCAL_NAMES and spec.host.address not in _LOCAL_NAMES:
            raise GluonFaceError(f"host {spec.host.name!r} is not this machine; fix: use --starter ssh "
                                 "(or srun inside a SLURM allocation)")
        return list(spec.argv), self._tagged(spec)

    def remote_check(self, host, argv):
        return list(argv)


class NetnsStarter(_Starter):
    """Run inside the network namespace named like the host (``ip netns exec NAME``); needs root.

    ``ip netns exec`` execs the command in place, so the process group and signals stay ours.
    """
    name = "netns"

    def command(self, spec):
        ns = validate_name(spec.host.name, "netns")
        return ["ip", "netns", "exec", ns] + list(spec.argv), self._tagged(spec)

    def remote_check(self, host, argv):
        return ["ip", "netns", "exec", validate_name(host.name, "netns")] + list(argv)


class SshStarter(_Starter):
    """Run over ssh (key-based, no prompts, no terminal).

    The remote command line is ``cd WORKDIR && exec env K=V ... ARGV``, every word quoted with
    ``shlex.quote`` for the remote login shell; WORKDIR is the launcher's working directory (the same path
    must exist on every host). sshd passes on only LANG/LC_* from the client, so the environment travels
    as ``env`` words: the planned variables, the launcher's ``PYTHONPATH`` and every variable starting
    with one of ``FORWARD_PREFIXES``, and ``GLUONFACE_JOB=<id>`` naming this launch.

    Teardown: killing the local ssh client does not stop the remote process. Without a terminal sshd
    does not signal it; it dies only if it writes after the connection is gone (EPIPE), and a ps-lite
    process blocked in a barrier never writes. So the supervisor also runs ``cleanup_commands``: per
    host, one ssh command that sends SIGTERM to every process there whose environment holds this
    launch's ``GLUONFACE_JOB`` (children included), waits up to the grace period and SIGKILLs the rest.
    A launcher killed with SIGKILL runs no teardown at all; then the heartbeat's dead-man switch ends
    the remote processes (their next heartbeat write fails: ``gluonface.parallel.heartbeat``); any left can
    be found with ``grep -lzx GLUONFACE_JOB=<id> /proc/*/environ`` (the id is in processes.json).
    """
    name = "ssh"
    FORWARD_NAMES = ("PYTHONPATH",)
    FORWARD_PREFIXES = ("MXNET_", "OMP_", "KMP_", "DMLC_", "PS_", "HOROVOD_", "GLUONFACE_", "GLOO_")

    def __init__(self, workdir=None, job_id=None):
        super().__init__(job_id)
        self.workdir = workdir or os.getcwd()

    def _ssh(self, host):
        argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new"]
        if host.port:
            argv += ["-p", str(int(host.port))]
        return argv + [validate_name(host.name, "ssh host")]

    def _forwarded(self):
        return {k: v for k, v in os.environ.items()
                if k in self.FORWARD_NAMES or k.startswith(self.FORWARD_PREFIXES)}

    def command(self, spec):
        env = self._forwarded()
        env.update(spec.env)
        env[JOB_VAR] = self.job_id
        pairs = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(env.items()))
        args = " ".join(shlex.quote(a) for a in spec.argv)
        remote = f"cd {shlex.quote(self.workdir)} && exec env {pairs} {args}"
        return self._ssh(spec.host) + [remote], dict(os.environ)

    def remote_check(self, host, argv):
        return self._ssh(host) + [" ".join(shlex.quote(a) for a in argv)]


# POSIX sh; `grep -z` (GNU, busybox) reads NUL-separated /proc/PID/environ. CONT after TERM: a stopped
# process would keep the TERM pending. Run without the tag itself, so it never matches its own shell.
_REMOTE_STOP = ("t={tag}; pids() {{ grep -lzxF -- \"$t\" /proc/[0-9]*/environ 2>/dev/null "
                "| sed 's#^/proc/##; s#/environ$##'; }}; "
                "p=$(pids); [ -z \"$p\" ] && exit 0; kill -s TERM $p 2>/dev/null; kill -s CONT $p 2>/dev/null; "
                "i=0; while [ $i -lt {steps} ]; do sleep 1; p=$(pids); [ -z \"$p\" ] && exit 0; i=$((i+1)); done; "
                "kill -s KILL $p 2>/dev/null; exit 0")


class SrunStarter(_Starter):
    """Run as one SLURM step on the host (inside an allocation): ``srun -N1 -n1 -w HOST --overlap``.

    Teardown: srun forwards the supervisor's SIGTERM to its task, and the tag sweep runs as one more step
    per node (``srun --overlap sh -c ...``). The task of an srun killed outright (SIGKILL) runs on until
    the tag sweep stops it, or until the job ends (SLURM 22.05); the job ends with the batch script, which
    ends with this launcher, and SLURM then kills every process of the job.
    """
    name = "srun"

    def command(self, spec):
        host = validate_name(spec.host.name, "srun host")
        return (["srun", "-N1", "-n1", "-w", host, "--overlap", "--kill-on-bad-exit=1", "--export=ALL"]
                + list(spec.argv), self._tagged(spec))

    def remote_check(self, host, argv):
        return ["srun", "-N1", "-n1", "-w", validate_name(host.name, "srun host"), "--overlap"] + list(argv)


STARTERS = {"local": LocalStarter, "netns": NetnsStarter, "ssh": SshStarter, "srun": SrunStarter}


def get_starter(name):
    """The starter registered under ``name`` (local, netns, ssh, srun)."""
    try:
        return STARTERS[name]()
    except KeyError:
        raise GluonFaceError(f"unknown starter {name!r}; fix: use one of {', '.join(STARTERS)}") from None
