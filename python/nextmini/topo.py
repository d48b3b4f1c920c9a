"""Topologies built in Python: nextmini's presets, nodes and links added one by one, or a
networkx graph whose edges carry `rate`, `delay`, `jitter`, `loss`, `queue`. Each becomes the
`[topology]` and `[[link]]` tables of an experiment file.

    from nextmini import topo
    t = topo.fat_tree(4)
    t = topo.Topology(); a = t.add_node(); b = t.add_node(); t.add_link(a, b, delay="5ms")
    t = topo.from_networkx(graph)
"""

from typing import Any, Dict, List, Optional, Tuple

#: Link parameters nextmini takes, as the experiment file and `link set` write them.
LINK_KEYS = (
    "rate",
    "burst",
    "delay",
    "jitter",
    "loss",
    "queue",
    "queue_bytes",
    "aqm",
    "scheduler",
)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"{v!r} can't be written in an experiment file")


def _params(params: Dict[str, Any]) -> Dict[str, Any]:
    unknown = sorted(set(params) - set(LINK_KEYS))
    if unknown:
        raise ValueError(f"unknown link parameter(s) {unknown}: nextmini takes {list(LINK_KEYS)}")
    return {k: v for k, v in params.items() if v is not None}


class Topology:
    """Nodes 1..n and the links between them, with parameters per link (both directions)."""

    def __init__(self, n_nodes: int = 0, preset: Optional[Tuple[str, Dict[str, Any]]] = None):
        self.n_nodes = n_nodes
        self.preset = preset
        self.edges: List[Tuple[int, int]] = []
        self.link_params: Dict[Tuple[int, int], Dict[str, Any]] = {}
        self.labels: Dict[int, Any] = {}

    def add_node(self, label: Any = None) -> int:
        """A new node; its id (1, 2, …)."""
        self.n_nodes += 1
        if label is not None:
            self.labels[self.n_nodes] = label
        return self.n_nodes

    def add_link(self, a: int, b: int, **params: Any) -> "Topology":
        """A link between nodes a and b, with its parameters (rate="10mbit", delay="5ms", …)."""
        for n in (a, b):
            if not 1 <= n <= self.n_nodes:
                raise ValueError(f"node {n} is not in the topology (1..={self.n_nodes})")
        if a == b:
            raise ValueError(f"a link from node {a} to itself")
        key = (min(a, b), max(a, b))
        if key not in self.edges:
            self.edges.append(key)
        if params:
            self.link_params[key] = _params(params)
        return self

    def link(self, a: int, b: int, **params: Any) -> "Topology":
        """Parameters for a link of a preset (or of the links added)."""
        key = (min(a, b), max(a, b))
        self.link_params[key] = {**self.link_params.get(key, {}), **_params(params)}
        return self

    def toml(self) -> str:
        """The `[topology]` and `[[link]]` tables."""
        lines = ["[topology]"]
        if self.preset is not None:
            kind, config = self.preset
            lines.append(f'type = "{kind}"')
            lines.append(f"{kind}_config = {_toml_value(config)}")
        else:
            if self.n_nodes < 1:
                raise ValueError("the topology has no nodes: add_node() first")
            lines.append(f"n_nodes = {self.n_nodes}")
            lines.append(f"edges = {_toml_value([list(e) for e in self.edges])}")
        for (a, b), params in sorted(self.link_params.items()):
            if params:
                lines += ["", "[[link]]", f"between = [{a}, {b}]"]
                lines += [f"{k} = {_toml_value(v)}" for k, v in params.items()]
        return "\n".join(lines) + "\n"

    def to_networkx(self):
        """A networkx Graph of the nodes and links added (presets are built by nextmini)."""
        import networkx as nx

        if self.preset is not None:
            raise ValueError("a preset's links are made by nextmini: build it with add_link to get a graph")
        g = nx.Graph()
        for n in range(1, self.n_nodes + 1):
            g.add_node(n, **({"label": self.labels[n]} if n in self.labels else {}))
        for e in self.edges:
            g.add_edge(*e, **self.link_params.get(e, {}))
        return g


def from_networkx(graph) -> Topology:
    """A topology from a networkx graph: nodes numbered 1..n in the graph's order (their
    names kept as labels), edge attributes among LINK_KEYS as each link's parameters."""
    t = Topology()
    ids = {}
    for node in graph.nodes:
        ids[node] = t.add_node(label=node)
    for a, b, attrs in graph.edges(data=True):
        t.add_link(ids[a], ids[b], **{k: v for k, v in attrs.items() if k in LINK_KEYS})
    return t


def ring(n: int) -> Topology:
    return Topology(n, ("ring", {"n_nodes": n}))


def line(n: int) -> Topology:
    return Topology(n, ("line", {"n_nodes": n}))


def star(n: int) -> Topology:
    """Node 1 in the middle."""
    return Topology(n, ("star", {"n_nodes": n}))


def full_mesh(n: int) -> Topology:
    return Topology(n, ("full_mesh", {"n_nodes": n}))


def tree(depth: int, fanout: int) -> Topology:
    n = sum(fanout**d for d in range(depth + 1))
    return Topology(n, ("tree", {"depth": depth, "fanout": fanout}))


def fat_tree(k: int) -> Topology:
    """(k/2)² core, k²/2 aggregation, k²/2 edge switches, then k³/4 hosts."""
    n = (k // 2) ** 2 + k * k + k**3 // 4
    return Topology(n, ("fat_tree", {"k": k}))


def torus(dim: int, n: int) -> Topology:
    return Topology(n**dim, ("torus", {"dim": dim, "n": n}))
