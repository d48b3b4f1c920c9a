"""nextmini from Python: experiments built, run, changed and measured from a script
(`Experiment`, `topo`), and the node-side API for programs inside a node (`node`)."""

from . import node, topo
from .errors import NextminiError
from .experiment import Experiment, Flow, Group, Link, Node, Route, binary
from .units import parse_bytes, parse_rate_bytes

__all__ = [
    "Experiment",
    "Flow",
    "Group",
    "Link",
    "NextminiError",
    "Node",
    "Route",
    "binary",
    "node",
    "parse_bytes",
    "parse_rate_bytes",
    "topo",
]
