"""SLURM and Kubernetes renderers: golden files, schema validation, and the SLURM role mapping."""
import os

import pytest
import yaml

from gluonface.launch.job import LaunchRequest
from gluonface.launch.k8s import mpijob, ps_objects, write_manifests
from gluonface.launch.slurm import render_sbatch, role_for_task

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
KV = LaunchRequest(config="configs/ms1mv3_r50_arcface.yaml", engine="kvstore", workers=4, servers=2,
                   overrides=("data.rec=/data/ms1m",), interface="ib0", timeout=7200, image="reg/gf:1")
HVD = LaunchRequest(config="configs/ms1mv3_r50_arcface.yaml", engine="horovod", workers=8,
                    overrides=("optim.lr=0.2",), interface="eth0", resume="auto", image="reg/gf:1")


def _golden(name, text):
    path = os.path.join(GOLDEN, name)
    if os.environ.get("GLUONFACE_UPDATE_GOLDEN") == "1":   # regenerate after an intended change, then review
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    with open(path, encoding="utf-8") as f:
        assert text == f.read(), f"{name} changed; review and regenerate with GLUONFACE_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("req,name", [(KV, "launch_kvstore.sbatch"), (HVD, "launch_horovod.sbatch")])
def test_sbatch_golden(req, name):
    _golden(name, render_sbatch(req))


@pytest.mark.parametrize("req,name", [(KV, "ps-job.yaml"), (HVD, "mpijob.yaml")])
def test_k8s_golden(tmp_path, req, name):
    path = write_manifests(req, str(tmp_path))
    assert os.path.basename(path) == name
    with open(path, encoding="utf-8") as f:
        _golden("launch_" + name, f.read())


def test_ps_objects_validate_against_kubernetes_schema():
    kv = pytest.importorskip("kubernetes_validate")
    for doc in ps_objects(KV):
        kv.validate(doc, "1.30", strict=True)   # raises ValidationError on any schema violation
    bad = ps_objects(KV)[1]
    bad["spec"]["template"]["spec"]["containers"][0]["env"][0]["valu"] = "x"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, "1.30", strict=True)


def test_k8s_contract():
    docs = ps_objects(KV)
    service, sched, server, worker = docs
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DMLC_ROLE"] == "worker" and env["DMLC_PS_ROOT_URI"] == service["metadata"]["name"]
    assert (env["DMLC_NUM_SERVER"], env["DMLC_NUM_WORKER"]) == ("2", "4")
    assert env["DMLC_NODE_HOST"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert service["spec"]["selector"] == sched["spec"]["template"]["metadata"]["labels"]
    assert (server["spec"]["completions"], worker["spec"]["completions"]) == (2, 4)
    job = mpijob(HVD)
    launcher = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]["command"]
    assert launcher[:3] == ["horovodrun", "--gloo", "-np"] and "/etc/mpi/hostfile" in launcher
    assert launcher[-4:] == ["--set", "dist.engine=horovod", "--resume", "auto"]
    assert yaml.safe_load(yaml.safe_dump(job)) == job


def test_k8s_runs_an_exec_command_in_place_of_train():
    import dataclasses
    cmd = ("python", "my train.py", "--lr", "0.1")
    worker = ps_objects(dataclasses.replace(KV, command=cmd))[3]
    assert worker["spec"]["template"]["spec"]["containers"][0]["command"] == list(cmd)
    launcher = mpijob(dataclasses.replace(HVD, command=cmd))["spec"]["mpiReplicaSpecs"]["Launcher"]
    assert launcher["template"]["spec"]["containers"][0]["command"][-4:] == list(cmd)


@pytest.mark.parametrize("where", [{"slurm": "job.sbatch"}, {"k8s": "out"}])
def test_elastic_is_refused_for_written_jobs(tmp_path, where):
    import dataclasses

    from gluonface.errors import GluonFaceError
    from gluonface.launch.render import render
    where = {k: str(tmp_path / v) for k, v in where.items()}
    with pytest.raises(GluonFaceError, match="--elastic is not available"):
        render(dataclasses.replace(HVD, elastic=True, **where))
    assert not os.listdir(tmp_path)


def test_slurm_role_mapping():
    assert [role_for_task(i, 2) for i in range(5)] == ["scheduler", "server", "server", "worker", "worker"]


def test_slurm_role_execs_the_worker_with_its_role():
    import subprocess
    import sys
    env = dict(os.environ, SLURM_PROCID="3", SLURM_LOCALID="1", DMLC_NUM_SERVER="2")
    code = "import os; print(os.environ['DMLC_ROLE'], os.environ['GLUONFACE_LOCAL_RANK'], bool(os.environ['DMLC_NODE_HOST']))"
    out = subprocess.run([sys.executable, "-m", "gluonface.launch.slurm_role", "--", sys.executable, "-c", code],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["worker", "1", "True"]
