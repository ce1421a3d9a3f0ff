"""Check the environment a job needs (MXNet build, numpy, GPUs, Horovod, gluoncv, MTCNN, ONNX, disk; hosts)
and which compute paths run right on this CPU (fp32 train, bf16 train, bf16 infer, INT8 infer, every
backbone's forward and backward pass), each verified by comparing numbers, never by the CPU's name.

Each finding is ok, warn or fail, and every non-ok finding says how to fix it. Exit status 1 when any check
fails. With --hosts FILE, each host of the hostfile is probed over ssh and the versions that must match
(Python, MXNet, numpy, Horovod, gluonface) are compared.
"""


def add_arguments(parser):
    parser.add_argument("--run-dir", default=".", help="where runs will be written (free disk is checked there)")
    parser.add_argument("--hosts", metavar="FILE", help="hostfile (`host slots=N` or `host:N` lines) to probe over ssh")
    parser.add_argument("--remote-python", default="python3", help="python on the hosts that has gluonface installed")
    parser.add_argument("--json", action="store_true", help="print this host's facts as JSON (used over ssh)")
    parser.add_argument("--quick", action="store_true",
                        help="skip the forward + backward pass of every backbone (about a minute)")


def run(args):
    from gluonface.doctor import run_doctor
    return run_doctor(run_dir=args.run_dir, hosts_file=args.hosts, remote_python=args.remote_python,
                      as_json=args.json, quick=args.quick)
