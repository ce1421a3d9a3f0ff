"""getopt_long the way SLURM's commands use it: options stop at the first non-option word (the command).

An option table maps each spelling (``"-N"``, ``"--nodes"``) to ``(key, kind)`` where kind is ``"flag"``,
``"value"`` (``-N 2``, ``-N2``, ``--nodes 2``, ``--nodes=2``) or ``"optional"`` (only attached:
``-K1``, ``--kill-on-bad-exit=1``). Unknown options are errors, worded like SLURM's.
"""
import sys


def fail(tool, message):
    sys.stderr.write(f"{tool}: {message}\nTry \"{tool} --help\" for more information\n")
    sys.exit(1)


def parse(tool, argv, table):
    """Returns (list of (key, value), the words after the options)."""
    found, i = [], 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            return found, argv[i + 1:]
        if not word.startswith("-") or word == "-":
            break
        if word.startswith("--"):
            name, eq, attached = word.partition("=")
            if name not in table:
                fail(tool, f"unrecognized option '{word}'")
            key, kind = table[name]
            if kind == "flag":
                if eq:
                    fail(tool, f"option '{name}' doesn't allow an argument")
                found.append((key, True))
            elif kind == "optional":
                found.append((key, attached if eq else None))
            else:
                if not eq:
                    i += 1
                    if i >= len(argv):
                        fail(tool, f"option '{name}' requires an argument")
                    attached = argv[i]
                found.append((key, attached))
            i += 1
            continue
        j = 1
        while j < len(word):
            name = "-" + word[j]
            if name not in table:
                fail(tool, f"invalid option -- '{word[j]}'")
            key, kind = table[name]
            rest = word[j + 1:]
            if kind == "flag":
                found.append((key, True))
                j += 1
                continue
            if kind == "optional":
                found.append((key, rest or None))
            elif rest:
                found.append((key, rest))
            else:
                i += 1
                if i >= len(argv):
                    fail(tool, f"option requires an argument -- '{word[j]}'")
                found.append((key, argv[i]))
            break
        i += 1
    return found, argv[i:]


def time_limit(text):
    """SLURM time limits: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS -> seconds."""
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:
        parts += [0] * (3 - len(parts))
        h, m, s = parts
        return ((int(days) * 24 + h) * 60 + m) * 60 + s
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return (parts[0] * 60 + parts[1]) * 60 + parts[2]
