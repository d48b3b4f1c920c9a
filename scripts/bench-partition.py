#!/usr/bin/env python3
"""How many links nextmini's placement cuts, next to METIS at the same number of hosts and the
same balance, on 10,000-node graphs of several families.

    python3 -m venv /tmp/nm-metis && /tmp/nm-metis/bin/pip install -q pymetis networkx
    /tmp/nm-metis/bin/python scripts/bench-partition.py [target/release/nextmini]

Each graph is written as networkx node-link JSON and placed by `nextmini schedule FILE
--hosts h[1-K] --json` (no constraints, equal hosts); METIS (pymetis, default options, which
allow 3 % imbalance) partitions the same graph into K parts. Prints the cut of each, the ratio,
the largest part over the mean for both, and nextmini's placement time.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import networkx as nx
import pymetis

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/nextmini"
N = 10_000
GRAPHS = [
    ("random 4-regular", lambda: nx.random_regular_graph(4, N, seed=1)),
    ("100×100 grid", lambda: nx.convert_node_labels_to_integers(nx.grid_2d_graph(100, 100))),
    ("Barabási–Albert (m=2)", lambda: nx.barabasi_albert_graph(N, 2, seed=1)),
    ("Watts–Strogatz (k=6, p=0.05)", lambda: nx.watts_strogatz_graph(N, 6, 0.05, seed=1)),
]
HOSTS = [3, 10, 100]


def cut_of(edges, part):
    return sum(1 for a, b in edges if part[a] != part[b])


def imbalance(part, k):
    sizes = [0] * k
    for p in part.values():
        sizes[p] += 1
    return max(sizes) / (len(part) / k)


print(f"| graph | hosts | nextmini cut | METIS cut | ratio | largest/mean nextmini | largest/mean METIS | nextmini placement |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
with tempfile.TemporaryDirectory() as tmp:
    for name, make in GRAPHS:
        g = make()
        g = nx.convert_node_labels_to_integers(g)  # 0..N-1
        edges = list(g.edges())
        path = Path(tmp) / "g.json"
        path.write_text(json.dumps(nx.node_link_data(g, edges="links")))
        toml = Path(tmp) / "g.toml"
        toml.write_text(f'[topology]\ntype = "file"\nfile = "{path}"\n')
        adjacency = [sorted(g.neighbors(v)) for v in range(g.number_of_nodes())]
        for k in HOSTS:
            started = time.monotonic()
            out = subprocess.run(
                [BIN, "schedule", str(toml), "--hosts", f"h[1-{k}]", "--json", "--cpus", "64", "--mem-mib", "65536"],
                capture_output=True, text=True, check=True,
            )
            took = time.monotonic() - started
            doc = json.loads(out.stdout)
            # nextmini numbers nodes 1..N in file order: node v of the graph is id v + 1.
            ours = {}
            for i, host in enumerate(doc["hosts"]):
                for node_id in host["nodes"]:
                    ours[node_id - 1] = i
            _, parts = pymetis.part_graph(k, adjacency=adjacency)
            metis = dict(enumerate(parts))
            a, b = cut_of(edges, ours), cut_of(edges, metis)
            print(
                f"| {name} | {k} | {a:,} | {b:,} | {a / max(b, 1):.2f}× | {imbalance(ours, k):.3f} | {imbalance(metis, k):.3f} | {took:.2f} s |",
                flush=True,
            )
