"""``SymbolGraph``: an MXNet symbol's JSON nodes and parameter values, for rewriting a frozen network.

MXNet 1.x has no graph-rewriting API in Python; the symbol's JSON (nodes in topological order, each input
``[node, output, version]``) is edited instead and loaded back with ``mx.sym.load_json``. Rewrites append
nodes and redirect readers; nodes nothing depends on any more are dropped when the symbol is rebuilt.
"""
import json

import numpy as np

from gluonface.export.names import INPUT_NAME


def int_tuple(text):
    """``'(2, 2)'`` (an MXNet attribute) -> ``(2, 2)``; empty for a missing attribute."""
    return tuple(int(v) for v in str(text).strip("()[] ").split(",") if v.strip()) if text else ()


class SymbolGraph:
    """An MXNet symbol's JSON node list with its parameter values, edited in place.

    Args:
        sym: the symbol (one input ``data``).
        params: {name: NDArray or array} of every other input; kept as float64 so folded values round once.
        input_shape: (N, C, H, W) of ``data``, for the output shape of every original node (``shape``).

    An *entry* is a node output ``[node index, output index, version]``, as in the JSON.
    """

    def __init__(self, sym, params, input_shape):
        graph = json.loads(sym.tojson())
        self.nodes, self.heads, self.attrs = graph["nodes"], graph["heads"], graph.get("attrs", {})
        self.params = {k: np.asarray(v.asnumpy() if hasattr(v, "asnumpy") else v, np.float64)
                       for k, v in params.items()}
        internals = sym.get_internals()
        _, shapes, _ = internals.infer_shape(**{INPUT_NAME: tuple(input_shape)})
        self.shapes = dict(zip(internals.list_outputs(), shapes))
        self._uses = None

    def op(self, entry):
        return self.nodes[entry[0]]["op"]

    def node(self, entry):
        return self.nodes[entry[0]]

    def shape(self, entry):
        return self.shapes.get(self.node(entry)["name"] + "_output")

    def attr(self, entry, key, default=None):
        return self.node(entry).get("attrs", {}).get(key, default)

    def value(self, entry):
        """The parameter value of a variable entry, else None."""
        node = self.node(entry)
        return self.params.get(node["name"]) if node["op"] == "null" else None

    def users(self, entry):
        """Indices of the nodes reading ``entry`` (once per input slot); -1 stands for a graph output."""
        if self._uses is None:
            self._uses = {}
            for i in self.live():
                for e in self.nodes[i]["inputs"]:
                    self._uses.setdefault((e[0], e[1]), []).append(i)
            for e in self.heads:
                self._uses.setdefault((e[0], e[1]), []).append(-1)
        return self._uses.get((entry[0], entry[1]), [])

    def only_user(self, entry):
        """The index of the single node consuming ``entry``, else None."""
        users = self.users(entry)
        return users[0] if len(users) == 1 and users[0] >= 0 else None

    def fresh(self, base):
        taken = {n["name"] for n in self.nodes}
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}{k}"
        return name

    def set_inputs(self, i, inputs, **attrs):
        self.nodes[i]["inputs"] = [list(e) for e in inputs]
        self.nodes[i].setdefault("attrs", {}).update({k: str(v) for k, v in attrs.items()})
        self._uses = None

    def param(self, entry, value, base):
        """An entry holding ``value``: the variable ``entry`` rewritten when nothing else reads it, else new."""
        if entry is not None and self.value(entry) is not None and len(self.users(entry)) == 1:
            self.params[self.node(entry)["name"]] = np.asarray(value, np.float64)
            self.node(entry).pop("attrs", None)  # its __shape__ may no longer hold
            return entry
        return self.var(base, value)

    def var(self, base, value):
        self._uses = None
        name = self.fresh(base)
        self.params[name] = np.asarray(value, np.float64)
        self.nodes.append({"op": "null", "name": name, "inputs": []})
        return [len(self.nodes) - 1, 0, 0]

    def add(self, op, base, inputs, shape=None, **attrs):
        """Append an operator node (``shape``: its output shape, for later rewrites); returns its entry."""
        self._uses = None
        name = self.fresh(base)
        self.nodes.append({"op": op, "name": name, "inputs": [list(e) for e in inputs],
                           "attrs": {k: str(v) for k, v in attrs.items()}})
        self.shapes[name + "_output"] = shape
        return [len(self.nodes) - 1, 0, 0]

    def redirect(self, old, new):
        """Make every use of ``old`` (node index, output 0) read ``new`` instead."""
        self._uses = None
        for n in self.nodes:
            n["inputs"] = [list(new) if e[0] == old and e[1] == 0 else e for e in n["inputs"]]
        self.heads = [list(new) if e[0] == old and e[1] == 0 else e for e in self.heads]

    def live(self):
        """Indices of the nodes the outputs depend on, inputs before readers."""
        order, seen = [], set()

        def visit(i):
            stack = [(i, False)]
            while stack:
                j, done = stack.pop()
                if done:
                    order.append(j)
                elif j not in seen:
                    seen.add(j)
                    stack.append((j, True))
                    stack.extend((e[0], False) for e in reversed(self.nodes[j]["inputs"]) if e[0] not in seen)
        for e in self.heads:
            visit(e[0])
        return order

    def to_symbol(self):
        """(symbol, arg_params, aux_params) of the nodes the outputs depend on, as float32 NDArrays."""
        import mxnet as mx
        order = self.live()
        index = {old: new for new, old in enumerate(order)}
        nodes = [dict(self.nodes[i], inputs=[[index[e[0]], e[1], e[2]] for e in self.nodes[i]["inputs"]])
                 for i in order]
        graph = {"nodes": nodes, "arg_nodes": [k for k, n in enumerate(nodes) if n["op"] == "null"],
                 "heads": [[index[e[0]], e[1], e[2]] for e in self.heads], "attrs": self.attrs}
        sym = mx.sym.load_json(json.dumps(graph))
        aux = set(sym.list_auxiliary_states())
        values = {n: mx.nd.array(self.params[n].astype(np.float32)) for n in sym.list_inputs() if n != INPUT_NAME}
        return sym, {k: v for k, v in values.items() if k not in aux}, {k: v for k, v in values.items() if k in aux}
