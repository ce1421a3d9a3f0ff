"""Stand-in ``scontrol``: only ``scontrol show hostnames [LIST]`` (LIST defaults to $SLURM_JOB_NODELIST)."""
import os
import sys

from hostlist import expand
from slurm_cluster import take_cluster_arg


def main():
    _, argv = take_cluster_arg(sys.argv[1:])
    if argv[:2] not in (["show", "hostnames"], ["show", "hostname"]):
        sys.exit(f"stand-in scontrol: only 'show hostnames [LIST]' is supported, not {' '.join(argv)!r}")
    text = argv[2] if len(argv) > 2 else os.environ.get("SLURM_JOB_NODELIST", "")
    if not text:
        sys.exit("scontrol: error: host list is empty")
    print("\n".join(expand(text)))


if __name__ == "__main__":
    main()
