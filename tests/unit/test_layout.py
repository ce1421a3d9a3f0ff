"""The package's shape: imports point one way (no cycles), nothing imports the CLI, no folder with a name
that tools treat as generated output. Read from the source (ast), so lazy imports inside functions count."""
import ast
import os

import gluonface

ROOT = os.path.dirname(os.path.abspath(gluonface.__file__))
OUTPUT_FOLDER_NAMES = {"dist", "build", "out"}   # ignored at any depth by the standard Python .gitignore


def _module_name(path):
    rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _is_module(name):
    path = os.path.join(os.path.dirname(ROOT), *name.split("."))
    return os.path.isfile(path + ".py") or os.path.isdir(path)


def import_graph():
    """{module: {gluonface modules it imports anywhere in its source}}."""
    graph = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            module, deps = _module_name(path), set()
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gluonface"):
                    for alias in node.names:
                        sub = f"{node.module}.{alias.name}"
                        deps.add(sub if _is_module(sub) else node.module)
                elif isinstance(node, ast.Import):
                    deps.update(a.name for a in node.names if a.name.startswith("gluonface"))
            # A package's __init__ loading its own submodules (the model registry) is containment, not a
            # dependency of the package on them.
            if name == "__init__.py":
                deps = {d for d in deps if not d.startswith(module + ".")}
            graph[module] = deps - {module}
    return graph


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep, path + [dep])
                if found:
                    return found
        state[node] = "done"
        return None
    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_no_import_cycles():
    assert _cycle(import_graph()) is None, " -> ".join(_cycle(import_graph()))


def test_the_checker_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_imports_the_cli():
    users = [m for m, deps in import_graph().items()
             if any(d == "gluonface.cli" or d.startswith("gluonface.cli.") for d in deps)
             and not m.startswith("gluonface.cli") and m != "gluonface.__main__"]
    assert not users, users


def test_no_folder_named_like_build_output():
    for folder, dirs, _ in os.walk(ROOT):
        bad = OUTPUT_FOLDER_NAMES & set(dirs)
        assert not bad, f"{folder}: {sorted(bad)} (the standard .gitignore drops such folders at any depth)"


# Horovod 0.28.1 ops that read their op name after enqueueing it (a use-after-free that crashes a rank now
# and then): gluonface broadcasts through gluonface.parallel.horovod_ops instead.
UNSAFE_HOROVOD_OPS = {"broadcast", "broadcast_", "broadcast_object", "broadcast_parameters", "alltoall", "join"}


def test_no_horovod_op_that_can_crash_a_rank():
    calls = []
    for folder, _, files in os.walk(ROOT):
        for name in (n for n in files if n.endswith(".py")):
            path = os.path.join(folder, name)
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "hvd" \
                        and node.func.attr in UNSAFE_HOROVOD_OPS:
                    calls.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} hvd.{node.func.attr}")
    assert not calls, calls
