"""``--slurm`` / ``--k8s``: write the job for a scheduler that starts the processes itself."""
import shutil
import subprocess
import sys

from gluonface.errors import GluonFaceError


def render(req, cfg=None, echo=sys.stderr):
    """Write the sbatch script or the Kubernetes manifests of ``req``; with ``req.submit`` run ``sbatch``.

    Returns:
        exit code (0, or sbatch's).
    """
    if req.elastic:
        where = "--slurm" if req.slurm else "--k8s"
        raise GluonFaceError(f"--elastic is not available with {where}: the written job has a fixed set of "
                             "workers; fix: drop --elastic (a failed job then resumes with --resume auto), or run "
                             "`gluonface launch --elastic --hosts FILE` on machines it can reach over ssh")
    if req.slurm:
        from gluonface.launch.slurm import render_sbatch
        with open(req.slurm, "w", encoding="utf-8") as f:
            f.write(render_sbatch(req))
        print(f"wrote {req.slurm}", file=echo)
        if not req.submit:
            return 0
        if shutil.which("sbatch") is None:
            raise GluonFaceError("--submit: sbatch is not on PATH; fix: run on a SLURM login node, or submit "
                                 f"{req.slurm} yourself")
        return subprocess.run(["sbatch", req.slurm], check=False).returncode
    from gluonface.launch.k8s import write_manifests
    path = write_manifests(req, req.k8s)
    print(f"wrote {path}", file=echo)
    return 0
