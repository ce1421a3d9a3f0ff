"""Stand-in ``srun`` (inside an allocation made by the stand-in sbatch): one job step, its tasks on nodes.

Implements what gluonface's sbatch script and srun starter use, as the srun man page describes it:
``-N/--nodes``, ``-n/--ntasks``, ``-w/--nodelist`` (host list, must be in the allocation),
``--ntasks-per-node``, ``-m/--distribution=block|cyclic``, ``-K/--kill-on-bad-exit[=0|1]``,
``--export=ALL|NONE|NIL|[ALL,]VAR[=value],...``, ``--overlap``, ``-l/--label``, ``-D/--chdir``, and the
input variables SLURM_NNODES, SLURM_NTASKS, SLURM_NTASKS_PER_NODE, SLURM_DISTRIBUTION,
SLURM_KILL_BAD_EXIT (so a batch job's ``SLURM_NTASKS`` applies to an ``srun`` without ``-n``, as on a real
cluster). Options stop at the command. Each task runs in the namespace of its node with the node's host
name, in its own session, with SLURM_PROCID/LOCALID/NODEID, SLURMD_NODENAME, SLURM_STEP_* set. A step
without ``--overlap`` waits while other steps hold the CPUs it needs on its nodes ("Requested nodes are
busy"). Signals sent to srun are forwarded to every task (a first SIGINT only reports; two within a
second terminate the step). With kill-on-bad-exit, a task ending non-zero terminates the step (SIGCONT +
SIGTERM, SIGKILL after KillWait). Exit status: the highest task exit code, or 128 + signal. An srun
killed with SIGKILL leaves its tasks running (the worst case SLURM allows); the job's end kills them.
"""
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import hostlist
from slurm_cluster import job_dir, locked, next_id, node_argv, take_cluster_arg
from slurm_options import parse

TABLE = {
    "-N": ("nodes", "value"), "--nodes": ("nodes", "value"), "-n": ("ntasks", "value"),
    "--ntasks": ("ntasks", "value"), "-w": ("nodelist", "value"), "--nodelist": ("nodelist", "value"),
    "--ntasks-per-node": ("ntasks_per_node", "value"), "-m": ("distribution", "value"),
    "--distribution": ("distribution", "value"), "-K": ("kill_on_bad_exit", "optional"),
    "--kill-on-bad-exit": ("kill_on_bad_exit", "optional"), "--export": ("export", "value"),
    "--overlap": ("overlap", "flag"), "-l": ("label", "flag"), "--label": ("label", "flag"),
    "-D": ("chdir", "value"), "--chdir": ("chdir", "value"), "-u": ("unbuffered", "flag"),
    "--unbuffered": ("unbuffered", "flag"), "-c": ("cpus_per_task", "value"),
    "--cpus-per-task": ("cpus_per_task", "value"), "-J": ("job_name", "value"), "--job-name": ("job_name", "value"),
    "--mpi": ("mpi", "value"), "--exact": ("exact", "flag"), "--exclusive": ("exclusive", "flag"),
    "-Q": ("quiet", "flag"), "--quiet": ("quiet", "flag"), "--jobid": ("jobid", "value"),
}
_SIGNAL_WORDS = {signal.SIGKILL: "Killed", signal.SIGTERM: "Terminated", signal.SIGINT: "Interrupt"}
FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCONT)


def die(message):
    sys.stderr.write(f"srun: error: {message}\n")
    sys.exit(1)


def options(argv):
    found, command = parse("srun", argv, TABLE)
    opts = dict(found)
    env_inputs = {"nodes": "SLURM_NNODES", "ntasks": "SLURM_NTASKS", "ntasks_per_node": "SLURM_NTASKS_PER_NODE",
                  "distribution": "SLURM_DISTRIBUTION", "kill_on_bad_exit": "SLURM_KILL_BAD_EXIT"}
    for key, var in env_inputs.items():
        if key not in opts and var in os.environ and not (key == "nodes" and "nodelist" in opts):
            opts[key] = os.environ[var]
    if not command:
        sys.stderr.write("srun: fatal: No command given to execute.\n")
        sys.exit(1)
    return opts, command


def step_layout(job, opts):
    """(nodes of the step, tasks per node, node of each task) or an error like srun's."""
    alloc = job["nodes"]
    listed = hostlist.expand(opts["nodelist"]) if "nodelist" in opts else []
    for node in listed:
        if node not in alloc:
            die(f"Unable to create step for job {job['id']}: Requested node configuration is not available")
    want = int(opts.get("nodes") or len(listed) or len(alloc))
    if want < len(listed) or want > len(alloc):
        die(f"Unable to create step for job {job['id']}: Requested node configuration is not available")
    nodes = listed + [n for n in alloc if n not in listed][:want - len(listed)]
    per_node = int(opts["ntasks_per_node"]) if "ntasks_per_node" in opts else None
    ntasks = int(opts.get("ntasks") or (per_node or 1) * len(nodes))
    if ntasks < len(nodes):
        sys.stderr.write(f"srun: Warning: can't run {ntasks} processes on {len(nodes)} nodes, setting nnodes "
                         f"to {ntasks}\n")
        nodes = nodes[:ntasks]
    caps = [min(job["tasks_per_node"][alloc.index(n)], per_node or 10 ** 6) for n in nodes]
    counts = [ntasks // len(nodes) + (1 if i < ntasks % len(nodes) else 0) for i in range(len(nodes))]
    if any(c > cap for c, cap in zip(counts, caps)):
        die(f"Unable to create step for job {job['id']}: More processors requested than permitted")
    dist = opts.get("distribution", "block").split(":")[0]
    if dist == "block":
        placement = [i for i, c in enumerate(counts) for _ in range(c)]
    elif dist == "cyclic":
        left, placement = list(counts), []
        while len(placement) < ntasks:
            for i in range(len(nodes)):
                if left[i]:
                    placement.append(i)
                    left[i] -= 1
    else:
        die(f"stand-in srun supports --distribution=block|cyclic, not {dist!r}")
    return nodes, counts, placement


def claim_cpus(jdir, job, nodes, counts, overlap):
    """Register this step's CPUs; a step without --overlap waits until they are free on every node."""
    claim = {"pid": os.getpid(), "overlap": overlap, "use": dict(zip(nodes, counts))}
    path = os.path.join(jdir, "steps", f"{os.getpid()}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    caps = dict(zip(job["nodes"], job["tasks_per_node"]))
    job_id = job["id"]
    told = False
    while True:
        with locked(os.path.join(jdir, "steps.lock")):
            used = {}
            for name in os.listdir(os.path.dirname(path)):
                other = _read_claim(os.path.join(os.path.dirname(path), name))
                if other and not other["overlap"]:
                    for node, n in other["use"].items():
                        used[node] = used.get(node, 0) + n
            if overlap or all(used.get(n, 0) + c <= caps[n] for n, c in zip(nodes, counts)):
                with open(path, "w", encoding="utf-8") as f:
                    json.dump(claim, f)
                return path
        if not told:
            sys.stderr.write(f"srun: Job {job_id} step creation temporarily disabled, retrying "
                             "(Requested nodes are busy)\n")
            told = True
        time.sleep(0.5)


def _read_claim(path):
    try:
        with open(path, encoding="utf-8") as f:
            claim = json.load(f)
        os.kill(claim["pid"], 0)
        return claim
    except (OSError, ValueError):
        return None   # its srun is gone


def export_env(spec):
    words = (spec or "ALL").split(",")
    slurm = {k: v for k, v in os.environ.items() if k.startswith("SLURM_")}
    env = dict(os.environ) if words[0] == "ALL" else slurm
    for word in words[1:] if words[0] in ("ALL", "NONE", "NIL") else words:
        key, eq, value = word.partition("=")
        if eq:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
    return env


def task_env(base, job, step_id, nodes, counts, placement, rank):
    node = placement[rank]
    env = dict(base)
    env.update({
        "SLURM_JOB_ID": str(job["id"]), "SLURM_JOBID": str(job["id"]), "SLURM_STEP_ID": str(step_id),
        "SLURM_STEPID": str(step_id), "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(placement[:rank].count(node)),
        "SLURM_NODEID": str(node), "SLURMD_NODENAME": nodes[node], "SLURM_STEP_NODELIST": hostlist.compress(nodes),
        "SLURM_NODELIST": hostlist.compress(nodes), "SLURM_STEP_NUM_NODES": str(len(nodes)),
        "SLURM_NNODES": str(len(nodes)), "SLURM_STEP_NUM_TASKS": str(len(placement)),
        "SLURM_NTASKS": str(len(placement)), "SLURM_NPROCS": str(len(placement)),
        "SLURM_STEP_TASKS_PER_NODE": hostlist.counts(counts), "SLURM_TASKS_PER_NODE": hostlist.counts(counts),
        "SLURM_GTIDS": ",".join(str(r) for r, n in enumerate(placement) if n == node),
        "SLURM_CLUSTER_NAME": job["env"]["SLURM_CLUSTER_NAME"], "SLURM_JOB_NODELIST": job["env"]["SLURM_JOB_NODELIST"],
    })
    return env


class Step:
    def __init__(self, job, step_id, nodes, placement, label, kill_wait):
        self.job, self.step_id, self.nodes, self.placement = job, step_id, nodes, placement
        self.label, self.kill_wait = label, kill_wait
        self.procs, self.done, self.last_int = [], queue.Queue(), 0.0
        self.terminating_since = None

    def start(self, command, envs, cwd):
        for rank, env in enumerate(envs):
            p = subprocess.Popen(node_argv(self.nodes[self.placement[rank]], command), env=env, cwd=cwd,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 start_new_session=True)
            self.procs.append(p)
            for stream, fd in ((p.stdout, 1), (p.stderr, 2)):
                threading.Thread(target=self._pump, args=(stream, fd, rank), daemon=True).start()
            threading.Thread(target=lambda r=rank, q=p: self.done.put((r, q.wait())), daemon=True).start()

    def _pump(self, stream, fd, rank):
        prefix = f"{rank}: ".encode() if self.label else b""
        for line in iter(stream.readline, b""):
            try:
                os.write(fd, prefix + line)
            except OSError:
                break   # srun's own output is gone; the task gets SIGPIPE on its next write
        stream.close()

    def signal(self, sig):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass

    def terminate(self):
        if self.terminating_since is None:
            sys.stderr.write(f"srun: Terminating StepId={self.job['id']}.{self.step_id}\n")
            self.terminating_since = time.monotonic()
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)

    def on_sigint(self, *_):
        now = time.monotonic()
        if now - self.last_int < 1.0:
            sys.stderr.write("srun: sending Ctrl-C to StepId=%s.%s\n" % (self.job["id"], self.step_id))
            self.signal(signal.SIGINT)
            self.terminate()
        else:
            running = sum(p.poll() is None for p in self.procs)
            sys.stderr.write(f"srun: interrupt (one more within 1 sec to abort)\nsrun: StepId={self.job['id']}."
                             f"{self.step_id} tasks running: {running}\n")
        self.last_int = now

    def wait(self, kill_on_bad_exit):
        codes = {}
        while len(codes) < len(self.procs):
            try:
                rank, code = self.done.get(timeout=0.2)
            except queue.Empty:
                if self.terminating_since and time.monotonic() - self.terminating_since > self.kill_wait:
                    self.signal(signal.SIGKILL)
                continue
            codes[rank] = code
            if code != 0:
                node = self.nodes[self.placement[rank]]
                what = f"Exited with exit code {code}" if code > 0 else _SIGNAL_WORDS.get(-code, f"signal {-code}")
                sys.stderr.write(f"srun: error: {node}: task {rank}: {what}\n")
                if kill_on_bad_exit:
                    self.terminate()
        return max((c if c >= 0 else 128 - c) for c in codes.values())


def main():
    cluster, argv = take_cluster_arg(sys.argv[1:])
    opts, command = options(argv)
    job_id = opts.get("jobid") or os.environ.get("SLURM_JOB_ID")
    jdir = job_dir(cluster, job_id) if job_id else None
    if not jdir or not os.path.exists(os.path.join(jdir, "alloc.json")) \
            or os.path.exists(os.path.join(jdir, "state.json")):
        die("stand-in srun only runs job steps inside a running allocation (submit with sbatch)")
    with open(os.path.join(jdir, "alloc.json"), encoding="utf-8") as f:
        job = json.load(f)
    nodes, counts, placement = step_layout(job, opts)
    claim = claim_cpus(jdir, job, nodes, counts, bool(opts.get("overlap")))
    try:
        step_id = next_id(os.path.join(jdir, "last_step")) - 1
        base = export_env(opts.get("export"))
        envs = [task_env(base, job, step_id, nodes, counts, placement, r) for r in range(len(placement))]
        kob = opts.get("kill_on_bad_exit", cluster.get("kill_on_bad_exit", 0))
        step = Step(job, step_id, nodes, placement, opts.get("label"), cluster.get("kill_wait", 30))
        for sig in FORWARDED:
            signal.signal(sig, lambda s, _f: step.signal(s))
        signal.signal(signal.SIGINT, step.on_sigint)
        step.start(command, envs, opts.get("chdir") or os.getcwd())
        code = step.wait(kob is None or str(kob) != "0")
    finally:
        os.unlink(claim)
    sys.exit(code)


if __name__ == "__main__":
    main()
