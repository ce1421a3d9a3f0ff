"""SLURM host lists: ``node[01-03,07],login1`` <-> ``['node01', 'node02', 'node03', 'node07', 'login1']``.

The compressed form is what SLURM puts in ``SLURM_JOB_NODELIST``; ``scontrol show hostnames`` expands it.
Only the forms SLURM itself produces for flat node names are supported (one bracket group per name,
numeric ranges whose zero padding is given by the first number).
"""
import re

_NAME = re.compile(r"^(.*?)(\d+)$")


def _split_top(text):
    """Split at commas that are not inside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth != 0:
        raise ValueError(f"unbalanced brackets in host list {text!r}")
    return parts + [cur]


def expand(text):
    """Expand a (possibly compressed) host list into names, in order."""
    names = []
    for part in filter(None, _split_top(text.strip())):
        m = re.fullmatch(r"([^\[\]]*)\[([^\[\]]+)\]([^\[\]]*)", part)
        if not m:
            if "[" in part or "]" in part:
                raise ValueError(f"cannot read host list item {part!r}")
            names.append(part)
            continue
        prefix, ranges, suffix = m.groups()
        for item in ranges.split(","):
            lo, _, hi = item.partition("-")
            width = len(lo)
            for i in range(int(lo), int(hi or lo) + 1):
                names.append(f"{prefix}{i:0{width}d}{suffix}")
    return names


def compress(names):
    """The compressed form of ``names`` (consecutive numbers of one prefix and width become ranges)."""
    groups = []   # [prefix, width, [numbers]] in first-seen order, or [name, None, None]
    for name in names:
        m = _NAME.match(name)
        if not m:
            groups.append([name, None, None])
            continue
        prefix, digits = m.groups()
        if groups and groups[-1][0] == prefix and groups[-1][1] == len(digits):
            groups[-1][2].append(int(digits))
        else:
            groups.append([prefix, len(digits), [int(digits)]])
    out = []
    for prefix, width, numbers in groups:
        if numbers is None:
            out.append(prefix)
        elif len(numbers) == 1:
            out.append(f"{prefix}{numbers[0]:0{width}d}")
        else:
            out.append(f"{prefix}[{_ranges(numbers, width)}]")
    return ",".join(out)


def _ranges(numbers, width):
    spans, start = [], numbers[0]
    for prev, cur in zip(numbers, numbers[1:] + [None]):
        if cur != prev + 1:
            spans.append(f"{start:0{width}d}" + (f"-{prev:0{width}d}" if prev != start else ""))
            start = cur
    return ",".join(spans)


def counts(values):
    """SLURM's per-node count form: ``[2, 2, 1]`` -> ``'2(x2),1'``."""
    out, i = [], 0
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i]:
            j += 1
        out.append(f"{values[i]}(x{j - i})" if j - i > 1 else str(values[i]))
        i = j
    return ",".join(out)
