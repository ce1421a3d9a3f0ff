"""Start a distributed training job (parameter servers or Horovod) and supervise it, or render SLURM/Kubernetes files.

Examples:
  gluonface launch configs/x.yaml --engine kvstore --workers 2 --servers 1
  gluonface launch configs/x.yaml --engine horovod --workers 4 --hosts cluster/hostfile.example --interface eth0
  gluonface launch configs/x.yaml --engine horovod --workers 8 --slurm job.sbatch [--submit]
  gluonface launch configs/x.yaml --engine kvstore --workers 4 --servers 2 --k8s manifests/

Every process gets its own process group; if any process dies or stalls (its heartbeat stops advancing)
the whole job is stopped on every host and the launcher exits non-zero naming it (124 for a stall or
--timeout). Hostfile format and failure handling: see cluster/README.md.
"""


def add_arguments(parser):
    parser.add_argument("config", help="experiment YAML (as for `gluonface train`)")
    parser.add_argument("--engine", required=True, choices=("kvstore", "horovod"))
    parser.add_argument("--workers", type=int, required=True, help="worker processes")
    parser.add_argument("--servers", type=int, default=1, help="parameter servers (kvstore engine)")
    parser.add_argument("--kvstore", default="dist_sync",
                        help="dist_sync (default), dist_device_sync or dist_async")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--hosts", dest="hosts_file", metavar="FILE", help="hostfile ('host slots=N' lines)")
    where.add_argument("--slurm", metavar="SBATCH_FILE", help="write an sbatch script instead of starting")
    where.add_argument("--k8s", metavar="OUT_DIR", help="write Kubernetes manifests instead of starting")
    parser.add_argument("--submit", action="store_true", help="with --slurm: submit it with sbatch")
    parser.add_argument("--image", default="gluonface:latest", help="container image for --k8s")
    parser.add_argument("--starter", choices=("local", "ssh", "netns", "srun"),
                        help="how processes are started on their host (default: local, or ssh with --hosts)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override passed to every worker (repeatable)")
    parser.add_argument("--interface", help="network interface the hosts share (e.g. eth0)")
    parser.add_argument("--port", type=int, help="scheduler port (default: a free one)")
    parser.add_argument("--timeout", type=float, help="hard limit in seconds for the whole job")
    parser.add_argument("--stall-timeout", type=float, metavar="SECONDS",
                        help="stop the job when a process makes no progress for this long (default: 20 x the "
                             "slowest recent step, at least 60 s; start-up, checkpoints and verification get "
                             "longer; 0: off)")
    parser.add_argument("--resume", help="passed to `gluonface train --resume` (e.g. auto)")
    parser.add_argument("--elastic", action="store_true", help="Horovod elastic: survivors continue")
    parser.add_argument("--min-workers", type=int, default=1, help="elastic: fewest workers to continue with")
    parser.add_argument("--log-dir", help="per-process logs (default: RUN_DIR/launch/<time>)")
    parser.add_argument("--dry-run", action="store_true", help="print the processes, start nothing")
    parser.add_argument("--exec", dest="exec_command", metavar="COMMAND",
                        help="run this worker command instead of `gluonface train CONFIG` (split like a shell "
                             "would, never run by one); CONFIG may then be '-'")


def run(args):
    import shlex
    from gluonface.launch.job import LaunchRequest, launch
    req = LaunchRequest(
        config=args.config, engine=args.engine, workers=args.workers, servers=args.servers,
        kvstore=args.kvstore, hosts_file=args.hosts_file, starter=args.starter,
        overrides=tuple(args.overrides), interface=args.interface, port=args.port, timeout=args.timeout,
        stall_timeout=args.stall_timeout,
        resume=args.resume, elastic=args.elastic, min_workers=args.min_workers, slurm=args.slurm,
        submit=args.submit, k8s=args.k8s, image=args.image, log_dir=args.log_dir, dry_run=args.dry_run,
        command=tuple(shlex.split(args.exec_command)) if args.exec_command else None)
    return launch(req)
