"""Stand-in ``sbatch``: allocate nodes, run the batch script on the first one in the background.

Like SLURM: the script must start with ``#!``; ``#SBATCH`` lines up to the first command are options
(the command line overrides them); unknown options are errors. The allocation is the first ``--nodes``
nodes of the cluster with ``--ntasks`` spread over them (at most ``--ntasks-per-node`` and
``cpus_per_node`` per node, as evenly as possible, never a node without a task). The script runs on the
first node, in the submission directory, with the submitter's environment plus what SLURM sets for a batch
job (SLURM_JOB_ID, SLURM_JOB_NODELIST in compressed form, SLURM_NNODES, SLURM_NTASKS, SLURM_TASKS_PER_NODE,
...); stdout and stderr go to ``--output`` (default ``slurm-%j.out``). sbatch prints ``Submitted batch job
N`` and returns at once; a detached job process (standing in for slurmctld/slurmd) enforces ``--time``
(SIGTERM, then SIGKILL after KillWait), stops the job on SIGTERM (like ``scancel``), kills whatever of the
job is still running when the script ends (as SLURM does at job end) and writes ``state.json``.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import hostlist
from slurm_cluster import job_dir, kill_job_processes, next_id, node_argv, take_cluster_arg
from slurm_options import parse, time_limit

TABLE = {
    "-N": ("nodes", "value"), "--nodes": ("nodes", "value"), "-n": ("ntasks", "value"),
    "--ntasks": ("ntasks", "value"), "--ntasks-per-node": ("ntasks_per_node", "value"),
    "-J": ("job_name", "value"), "--job-name": ("job_name", "value"), "-o": ("output", "value"),
    "--output": ("output", "value"), "-e": ("error", "value"), "--error": ("error", "value"),
    "-t": ("time", "value"), "--time": ("time", "value"), "-D": ("chdir", "value"),
    "--chdir": ("chdir", "value"), "--export": ("export", "value"), "-p": ("partition", "value"),
    "--partition": ("partition", "value"), "-c": ("cpus_per_task", "value"),
    "--cpus-per-task": ("cpus_per_task", "value"), "--mem": ("mem", "value"),
    "--exclusive": ("exclusive", "flag"), "--parsable": ("parsable", "flag"), "-A": ("account", "value"),
    "--account": ("account", "value"),
}


def script_options(text):
    """The ``#SBATCH`` words before the first command line of the script."""
    words = []
    for line in text.splitlines()[1:]:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        if stripped.startswith("#SBATCH"):
            words += stripped[len("#SBATCH"):].split()
    return words


def layout(ntasks, nodes, per_node_max):
    """Tasks per node: as even as possible, each node >= 1 and <= per_node_max."""
    counts = [ntasks // nodes + (1 if i < ntasks % nodes else 0) for i in range(nodes)]
    if min(counts) < 1 or max(counts) > per_node_max:
        return None
    return counts


def allocate(cluster, opts):
    cpus = cluster["cpus_per_node"]
    per_node = int(opts["ntasks_per_node"]) if "ntasks_per_node" in opts else None
    nodes = int(opts.get("nodes", 0)) or None
    if "ntasks" in opts:
        ntasks = int(opts["ntasks"])
    else:
        ntasks = (per_node or 1) * (nodes or 1)
    nodes = nodes or max(1, -(-ntasks // min(cpus, per_node or cpus)))
    counts = layout(ntasks, nodes, min(cpus, per_node or cpus)) if nodes <= len(cluster["nodes"]) else None
    if counts is None:
        sys.exit("sbatch: error: Batch job submission failed: Requested node configuration is not available")
    return cluster["nodes"][:nodes], counts, ntasks


def batch_env(cluster, job_id, opts, names, counts, ntasks, name):
    env = dict(os.environ) if opts.get("export", "ALL").split(",")[0] == "ALL" else \
        {k: v for k, v in os.environ.items() if k.startswith("SLURM_")}
    compressed = hostlist.compress(names)
    env.update({
        "SLURM_JOB_ID": str(job_id), "SLURM_JOBID": str(job_id), "SLURM_JOB_NAME": name,
        "SLURM_JOB_NODELIST": compressed, "SLURM_NODELIST": compressed, "SLURM_JOB_NUM_NODES": str(len(names)),
        "SLURM_NNODES": str(len(names)), "SLURM_TASKS_PER_NODE": hostlist.counts(counts),
        "SLURM_JOB_CPUS_PER_NODE": hostlist.counts([cluster["cpus_per_node"]] * len(names)),
        "SLURM_CPUS_ON_NODE": str(cluster["cpus_per_node"]), "SLURM_CLUSTER_NAME": cluster["name"],
        "SLURM_JOB_PARTITION": opts.get("partition", "debug"), "SLURM_SUBMIT_DIR": os.getcwd(),
        "SLURM_SUBMIT_HOST": os.uname().nodename, "SLURMD_NODENAME": names[0], "SLURM_NODEID": "0",
        "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_GTIDS": "0", "ENVIRONMENT": "BATCH",
    })
    if "ntasks" in opts or "ntasks_per_node" in opts:
        env["SLURM_NTASKS"] = env["SLURM_NPROCS"] = str(ntasks)
    if "ntasks_per_node" in opts:
        env["SLURM_NTASKS_PER_NODE"] = opts["ntasks_per_node"]
    return env


def output_path(pattern, job_id, name, node, workdir):
    path = pattern.replace("%%", "\0").replace("%j", str(job_id)).replace("%x", name).replace("%N", node)
    return os.path.join(workdir, path.replace("\0", "%"))


def submit(cluster, argv):
    opts_cli, rest = parse("sbatch", argv, TABLE)
    if not rest:
        sys.exit("sbatch: error: stand-in sbatch needs a script file")
    script, script_args = rest[0], rest[1:]
    with open(script, encoding="utf-8") as f:
        text = f.read()
    if not text.startswith("#!"):
        sys.exit("sbatch: error: This does not look like a batch script.  The first\n"
                 "sbatch: error: line must start with #! followed by the path to an interpreter.")
    opts_script, _ = parse("sbatch", script_options(text), TABLE)
    opts = dict(opts_script + opts_cli)
    names, counts, ntasks = allocate(cluster, opts)
    job_id = next_id(os.path.join(cluster["spool"], "last_job_id"))
    jdir = job_dir(cluster, job_id)
    os.makedirs(jdir)
    shutil.copy(script, os.path.join(jdir, "slurm_script"))
    os.chmod(os.path.join(jdir, "slurm_script"), 0o755)
    name = opts.get("job_name", os.path.basename(script))
    workdir = os.path.abspath(opts.get("chdir", os.getcwd()))
    job = {"id": job_id, "nodes": names, "tasks_per_node": counts, "ntasks": ntasks, "name": name,
           "workdir": workdir, "args": script_args,
           "output": output_path(opts.get("output", "slurm-%j.out"), job_id, name, names[0], workdir),
           "error": output_path(opts["error"], job_id, name, names[0], workdir) if "error" in opts else None,
           "time_limit": time_limit(opts["time"]) if "time" in opts else None,
           "env": batch_env(cluster, job_id, opts, names, counts, ntasks, name)}
    with open(os.path.join(jdir, "alloc.json"), "w", encoding="utf-8") as f:
        json.dump(job, f)
    subprocess.Popen([sys.executable, os.path.abspath(__file__), "--standin-cluster", cluster["file"],
                      "--run-job", str(job_id)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, env={"PATH": os.environ["PATH"]})
    print(job_id if "parsable" in opts else f"Submitted batch job {job_id}", flush=True)


def run_job(cluster, job_id):
    jdir = job_dir(cluster, job_id)
    with open(os.path.join(jdir, "alloc.json"), encoding="utf-8") as f:
        job = json.load(f)
    with open(os.path.join(jdir, "daemon.pid"), "w") as f:
        f.write(str(os.getpid()))
    out = open(job["output"], "ab")
    err = open(job["error"], "ab") if job["error"] else out
    script = subprocess.Popen(node_argv(job["nodes"][0], [os.path.join(jdir, "slurm_script"), *job["args"]]),
                              cwd=job["workdir"], env=job["env"], stdin=subprocess.DEVNULL, stdout=out,
                              stderr=err, start_new_session=True)
    state = {"state": None}

    def cancel(*_):
        state["state"] = "CANCELLED"
    signal.signal(signal.SIGTERM, cancel)
    start = time.monotonic()
    while script.poll() is None and state["state"] is None:
        if job["time_limit"] is not None and time.monotonic() - start > job["time_limit"]:
            state["state"] = "TIMEOUT"
            out.write(f"slurmstepd: error: *** JOB {job_id} CANCELLED AT {time.ctime()} DUE TO TIME LIMIT ***\n"
                      .encode())
            out.flush()
        time.sleep(0.2)
    code = script.poll()
    leftovers = kill_job_processes(cluster, job_id)   # job end: nothing of the job survives it
    code = script.wait() if code is None else code
    final = state["state"] or ("COMPLETED" if code == 0 else "FAILED")
    with open(os.path.join(jdir, "state.json.tmp"), "w", encoding="utf-8") as f:
        json.dump({"state": final, "exit_code": code, "killed_at_end": leftovers}, f)
    os.replace(os.path.join(jdir, "state.json.tmp"), os.path.join(jdir, "state.json"))


def main():
    cluster, argv = take_cluster_arg(sys.argv[1:])
    if argv[:1] == ["--run-job"]:
        run_job(cluster, int(argv[1]))
    else:
        submit(cluster, argv)


if __name__ == "__main__":
    main()
