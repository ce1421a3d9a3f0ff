"""Kubernetes manifests for either engine (written by ``gluonface launch --k8s OUT_DIR``).

* horovod: a Kubeflow MPI Operator ``MPIJob`` (``kubeflow.org/v2beta1``): workers run ``sshd``, the launcher
  runs ``horovodrun --gloo --hostfile /etc/mpi/hostfile`` (the operator mounts that hostfile);
* kvstore: Kubeflow's ``MXJob`` is gone from the training operator, so plain objects carry the same
  contract: a headless Service naming the scheduler pod, and one Indexed ``batch/v1`` Job per role with the
  ``DMLC_*`` environment; each pod advertises its own IP (``DMLC_NODE_HOST`` from ``status.podIP``).
  ``backoffLimit: 0`` everywhere: ps-lite cannot take a replaced worker mid-step, so a failure fails the
  job (resume with ``--resume auto``) and ``activeDeadlineSeconds`` (``--timeout``) bounds a hang.
"""
import os

from gluonface.launch.plan import SERVER_ENTRY, horovodrun_argv, train_argv

PS_PORT = 9091
ENV_THREADS = [{"name": "OMP_NUM_THREADS", "value": "2"}, {"name": "MXNET_CPU_WORKER_NTHREADS", "value": "1"}]


def job_name(config):
    base = os.path.splitext(os.path.basename(config))[0].lower()
    clean = "".join(c if c.isalnum() else "-" for c in base).strip("-")
    return ("gluonface-" + clean)[:50].rstrip("-")


def _labels(name, role):
    return {"app.kubernetes.io/name": "gluonface", "gluonface/job": name, "gluonface/role": role}


def mpijob(req, python="python"):
    """The ``MPIJob`` object (dict) of a Horovod job."""
    name = job_name(req.config)
    command = list(req.command) if req.command else \
        train_argv(req.config, "horovod", overrides=req.overrides, resume=req.resume, python=python)
    launcher_cmd = list(horovodrun_argv(command, None, workers=req.workers, interface=req.interface or "eth0",
                                        hostfile="/etc/mpi/hostfile"))
    container = {"image": req.image, "imagePullPolicy": "IfNotPresent", "env": ENV_THREADS}
    return {
        "apiVersion": "kubeflow.org/v2beta1", "kind": "MPIJob",
        "metadata": {"name": name, "labels": _labels(name, "mpijob")},
        "spec": {
            "slotsPerWorker": 1,
            "runPolicy": _run_policy(req, "Running"),
            "mpiImplementation": "OpenMPI",
            "mpiReplicaSpecs": {
                "Launcher": {"replicas": 1, "template": {"spec": {"containers": [
                    dict(container, name="launcher", command=launcher_cmd)]}}},
                "Worker": {"replicas": req.workers, "template": {"spec": {"containers": [
                    dict(container, name="worker", command=["/usr/sbin/sshd", "-De"])]}}},
            },
        },
    }


def _run_policy(req, clean):
    policy = {"cleanPodPolicy": clean, "backoffLimit": 0}
    if req.timeout:
        policy["activeDeadlineSeconds"] = int(req.timeout)
    return policy


def ps_objects(req, python="python"):
    """Service + scheduler/server/worker Jobs (list of dicts) of a parameter-server job."""
    name = job_name(req.config)
    sched_host = f"{name}-scheduler"
    common_env = [
        {"name": "DMLC_PS_ROOT_URI", "value": sched_host},
        {"name": "DMLC_PS_ROOT_PORT", "value": str(PS_PORT)},
        {"name": "DMLC_NUM_SERVER", "value": str(req.servers)},
        {"name": "DMLC_NUM_WORKER", "value": str(req.workers)},
        {"name": "DMLC_NODE_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ] + ENV_THREADS
    worker_cmd = list(req.command) if req.command else \
        list(train_argv(req.config, "kvstore", kvstore=req.kvstore, overrides=req.overrides, resume=req.resume,
                        python=python))
    server_cmd = [python, *SERVER_ENTRY]
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": sched_host, "labels": _labels(name, "scheduler")},
        "spec": {"clusterIP": "None", "selector": _labels(name, "scheduler"),
                 "ports": [{"name": "ps", "port": PS_PORT, "targetPort": PS_PORT}]},
    }
    return [service,
            _role_job(req, name, "scheduler", 1, server_cmd, common_env, port=PS_PORT),
            _role_job(req, name, "server", req.servers, server_cmd, common_env),
            _role_job(req, name, "worker", req.workers, worker_cmd, common_env)]


def _role_job(req, name, role, count, command, common_env, port=None):
    env = [{"name": "DMLC_ROLE", "value": role}] + common_env
    container = {"name": role, "image": req.image, "imagePullPolicy": "IfNotPresent", "command": command,
                 "env": env}
    if port:
        container["ports"] = [{"name": "ps", "containerPort": port}]
    spec = {"completions": count, "parallelism": count, "completionMode": "Indexed", "backoffLimit": 0,
            "template": {"metadata": {"labels": _labels(name, role)},
                         "spec": {"restartPolicy": "Never", "containers": [container]}}}
    if req.timeout:
        spec["activeDeadlineSeconds"] = int(req.timeout)
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": f"{name}-{role}", "labels": _labels(name, role)}, "spec": spec}


def write_manifests(req, out_dir, python="python"):
    """Write ``mpijob.yaml`` (horovod) or ``ps-job.yaml`` (kvstore) into ``out_dir``; returns the path."""
    import yaml
    os.makedirs(out_dir, exist_ok=True)
    if req.engine == "horovod":
        path, docs = os.path.join(out_dir, "mpijob.yaml"), [mpijob(req, python)]
    else:
        path, docs = os.path.join(out_dir, "ps-job.yaml"), ps_objects(req, python)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"# Generated by gluonface launch --k8s ({req.engine}, {req.workers} workers). "
                "Apply with: kubectl apply -f " + os.path.basename(path) + "\n")
        yaml.safe_dump_all(docs, f, sort_keys=False, default_flow_style=False)
    return path
