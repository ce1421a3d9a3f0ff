"""Launching distributed jobs: pure plans (``plan``), hostfiles, process starters (local, ssh, netns, srun),
the supervisor (fail fast, nothing left behind), pre-flight checks, and SLURM / Kubernetes renderers.
The entry point is ``gluonface.launch.job.launch(LaunchRequest)``; ``gluonface launch`` calls it.
"""
