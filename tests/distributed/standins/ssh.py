"""Stand-in ``ssh`` client + ``sshd``: the host is the network namespace named like it.

Parses the command line the way OpenSSH 9 does (BSD getopt: no permutation; options may follow the
destination; everything after the first non-option word is the command, joined with single spaces) and
rejects what OpenSSH rejects (unknown options, unknown ``-o`` keywords, no destination). The remote side
behaves like sshd without a terminal: a new session (setsid) in the host's namespace, host name set to the
host, a fresh login environment (USER, HOME, PATH, SHELL, SSH_* and the LANG/LC_* that Debian's default
SendEnv/AcceptEnv pass; nothing else from the client), working directory $HOME, and the command run as
``$SHELL -c COMMAND``. Its stdout/stderr are pipes copied by this process, so when this client dies the
remote command keeps running until it next writes (SIGPIPE), exactly the "killing ssh does not kill the
remote" behaviour of a real client. SIGTERM/SIGINT/SIGHUP/SIGQUIT make the client exit 255 without
signalling the remote. Exit status: the remote's, or 255 if it was killed by a signal or on a connection
error. With ``-tt`` (or ``-t`` and a terminal on stdin) the remote gets a pseudo-terminal instead, so
the client's death hangs it up (SIGHUP), as with a real pty session.

``--standin-log FILE`` (put first by the installed wrapper, never by callers) appends one JSON line per
connection: the argv as given, the host and the remote command line.
"""
import json
import os
import pwd
import signal
import subprocess
import sys
import threading

NO_ARG = set("1246afgknqstvxACGKMNTVXYy")
WITH_ARG = set("bceilmopBDEFIJLOPQRSwW")
KNOWN_OPTIONS = {   # -o keywords accepted here (a subset of ssh_config(5); anything else is an error)
    "batchmode", "stricthostkeychecking", "passwordauthentication", "connecttimeout", "userknownhostsfile",
    "loglevel", "serveraliveinterval", "serveralivecountmax", "identitiesonly", "identityfile", "port",
    "user", "sendenv", "setenv", "requesttty", "controlmaster", "controlpath", "controlpersist",
    "forwardagent", "compression", "globalknownhostsfile", "hostkeyalias", "checkhostip",
    "kbdinteractiveauthentication", "preferredauthentications", "pubkeyauthentication", "tcpkeepalive",
}
ACCEPT_ENV = ("LANG", "LC_")   # Debian: ssh_config "SendEnv LANG LC_*", sshd_config "AcceptEnv LANG LC_*"


def fail(message, code=255):
    sys.stderr.write(message + "\n")
    sys.exit(code)


def parse(argv):
    """OpenSSH's option loop. Returns (options dict, host, command words)."""
    opts = {"t": 0, "n": False, "o": [], "p": None}
    host, i, terminated = None, 0, False
    while True:
        while i < len(argv):
            word = argv[i]
            if word == "--":
                i, terminated = i + 1, True
                break
            if not word.startswith("-") or word == "-":
                break
            j = 1
            while j < len(word):
                ch = word[j]
                if ch in NO_ARG:
                    if ch == "t":
                        opts["t"] += 1
                    elif ch == "T":
                        opts["t"] = -1
                    elif ch == "n":
                        opts["n"] = True
                    j += 1
                elif ch in WITH_ARG:
                    value = word[j + 1:]
                    if not value:
                        i += 1
                        if i >= len(argv):
                            fail(f"option requires an argument -- {ch}\nusage: ssh [options] destination [command]")
                        value = argv[i]
                    if ch == "o":
                        opts["o"].append(value)
                    elif ch == "p":
                        opts["p"] = value
                    break
                else:
                    fail(f"unknown option -- {ch}\nusage: ssh [options] destination [command]")
            i += 1
        if host is None and i < len(argv):
            host, i = argv[i], i + 1
            if i < len(argv) and not terminated:
                continue   # OpenSSH parses options again after the destination
        break
    if host is None:
        fail("usage: ssh [options] destination [command [argument ...]]")
    for item in opts["o"]:
        key = item.replace("=", " ", 1).split()[0].lower() if item.strip() else ""
        if key not in KNOWN_OPTIONS:
            fail(f"command-line line 0: Bad configuration option: {key or item}")
    if opts["p"] is not None and not (opts["p"].isdigit() and 0 < int(opts["p"]) < 65536):
        fail(f"Bad port '{opts['p']}'")
    return opts, host.rsplit("@", 1)[-1], argv[i:]


def login_env(host):
    user = pwd.getpwuid(os.getuid())
    env = {"USER": user.pw_name, "LOGNAME": user.pw_name, "HOME": user.pw_dir, "SHELL": user.pw_shell,
           "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "MAIL": f"/var/mail/{user.pw_name}", "SSH_CLIENT": "10.0.0.0 50000 22",
           "SSH_CONNECTION": f"10.0.0.0 50000 {host} 22"}
    env.update({k: v for k, v in os.environ.items() if k == "LANG" or k.startswith("LC_")})
    return env, user.pw_shell or "/bin/sh"


def remote_argv(host, shell, command):
    # new UTS namespace so `hostname` is the host's name, as on a real machine; then $SHELL -c COMMAND in $HOME
    return ["ip", "netns", "exec", host, "unshare", "--uts", "--", "/bin/sh", "-c",
            'hostname "$1" && cd && exec "$2" -c "$3"', "sshd", host, shell, command]


def pump(src, dst_fd, close_src=True):
    try:
        while True:
            data = os.read(src, 65536)
            if not data:
                break
            os.write(dst_fd, data)
    except OSError:
        pass   # our side went away: like a dropped connection, the remote gets SIGPIPE on its next write
    finally:
        if close_src:
            os.close(src)


def run_pipes(argv, env, stdin_null):
    proc = subprocess.Popen(argv, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL if stdin_null else subprocess.PIPE)
    threads = [threading.Thread(target=pump, args=(os.dup(proc.stdout.fileno()), 1), daemon=True),
               threading.Thread(target=pump, args=(os.dup(proc.stderr.fileno()), 2), daemon=True)]
    proc.stdout.close()
    proc.stderr.close()
    if not stdin_null:
        def feed():
            pump(0, proc.stdin.fileno(), close_src=False)
            proc.stdin.close()
        threading.Thread(target=feed, daemon=True).start()
    for t in threads:
        t.start()
    code = proc.wait()
    for t in threads:
        t.join()
    return code


def run_pty(argv, env):
    import pty
    pid, master = pty.fork()   # child: new session, the pty as controlling terminal
    if pid == 0:
        os.execvpe(argv[0], argv, env)
    pump(master, 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def main():
    argv, log = sys.argv[1:], None
    if argv[:1] == ["--standin-log"]:
        argv, log = argv[2:], argv[1]
    opts, host, words = parse(argv)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"argv": argv, "host": host, "command": " ".join(words)}) + "\n")
    if not words:
        fail("stand-in ssh: an interactive login shell is not supported; give a command")
    if not os.path.exists(f"/var/run/netns/{host}"):
        fail(f"ssh: Could not resolve hostname {host}: Name or service not known")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, lambda *_: os._exit(255))
    env, shell = login_env(host)
    argv = remote_argv(host, shell, " ".join(words))
    tty = opts["t"] >= 2 or (opts["t"] == 1 and os.isatty(0))
    if opts["t"] == 1 and not tty:
        sys.stderr.write("Pseudo-terminal will not be allocated because stdin is not a terminal.\n")
    if tty:
        env["TERM"] = os.environ.get("TERM", "xterm")
        code = run_pty(argv, env)
    else:
        code = run_pipes(argv, env, opts["n"])
    sys.exit(code if code >= 0 else 255)


if __name__ == "__main__":
    main()
