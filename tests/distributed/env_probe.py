"""Record where and how this process was started, then become the real worker.

``python env_probe.py --probe DIR -- ARGV...`` writes ``DIR/<pid>.json`` (argv as received, working
directory, host name, environment) and execs ARGV in place, so the worker keeps this process's id,
session and environment. Used by the launch tests to prove quoting, ``cd`` and environment forwarding.
"""
import json
import os
import socket
import sys


def main(argv):
    if argv[:1] != ["--probe"] or "--" not in argv:
        sys.exit("usage: env_probe.py --probe DIR -- ARGV...")
    out, worker = argv[1], argv[argv.index("--") + 1:]
    os.makedirs(out, exist_ok=True)
    record = {"argv": worker, "cwd": os.getcwd(), "hostname": socket.gethostname(), "env": dict(os.environ),
              "pid": os.getpid()}
    tmp = os.path.join(out, f".{os.getpid()}.json")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(tmp, os.path.join(out, f"{os.getpid()}.json"))
    sys.stdout.flush()
    os.execv(worker[0], worker)


if __name__ == "__main__":
    main(sys.argv[1:])
