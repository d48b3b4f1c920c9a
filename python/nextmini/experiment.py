"""An experiment driven from Python: brought up by the `nextmini` binary, then controlled
through its controller's HTTP API, and torn down when the `with` block ends, however it ends.

    with Experiment(topo.ring(8), links={"rate": "100mbit", "delay": "1ms"}) as exp:
        exp.wait_ready()
        exp.link(1, 2).set(delay="10ms")
        f = exp.flow(1, 5, bytes="10MB")
        f.wait()
        print(f.fct)
"""

import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from ._http import Api
from .errors import NextminiError
from .topo import LINK_KEYS, Topology, _toml_value
from .units import parse_bytes, parse_rate_bytes


def binary() -> str:
    """The nextmini binary: $NEXTMINI_BIN, else `nextmini` on PATH."""
    path = os.environ.get("NEXTMINI_BIN") or shutil.which("nextmini")
    if not path:
        raise NextminiError(
            "no nextmini binary: put it on PATH or set NEXTMINI_BIN (cargo build --release builds target/release/nextmini)"
        )
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def _last_error(text: str) -> str:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("error: "):
            return line[len("error: "):]
    return text.strip().splitlines()[-1] if text.strip() else "no output"


def _table(records: List[Dict[str, Any]]):
    """A pandas DataFrame when pandas is there, else the records themselves."""
    try:
        import pandas
    except ImportError:
        return records
    return pandas.DataFrame.from_records(records)


class Experiment:
    """A nextmini experiment on this host. `with Experiment(...) as exp:` brings it up and
    tears it down at the end of the block (also on an exception or Ctrl-C)."""

    def __init__(
        self,
        topology: Topology,
        links: Optional[Dict[str, Any]] = None,
        *,
        name: Optional[str] = None,
        prefix: Optional[str] = None,
        underlay_base: Optional[str] = None,
        port: Optional[int] = None,
        state_dir: Optional[Union[str, Path]] = None,
        db: Optional[str] = None,
        scheduler: Optional[str] = None,
        metrics_interval: Optional[Union[float, str]] = None,
        token: bool = False,
        dataplane: bool = True,
        protocol: Optional[str] = None,
        max_nodes: Sequence[int] = (),
        extra: str = "",
    ):
        self.topology = topology
        self.links = dict(links or {})
        unknown = sorted(set(self.links) - set(LINK_KEYS))
        if unknown:
            raise ValueError(f"unknown link parameter(s) {unknown}: nextmini takes {list(LINK_KEYS)}")
        self.name = name
        # A prefix and an underlay subnet of its own, so that experiments side by side
        # (and leftovers of a crash) never meet.
        tag = "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(4))
        self.prefix = prefix or f"py{tag}"
        self.underlay_base = underlay_base or f"172.21.{random.randrange(0, 64) * 4}.0"
        self.port = port
        self.db = db
        self.scheduler = scheduler
        self.metrics_interval = metrics_interval
        self.token = token
        self.dataplane = dataplane
        # "tcp", "udp" or "quic": what carries every link (default: in process on one host).
        self.protocol = protocol
        # Nodes in max mode: links between two of them are veths their kernels forward over.
        self.max_nodes = sorted(set(max_nodes))
        self.extra = extra
        self._own_state = state_dir is None
        self.state_dir = Path(state_dir) if state_dir else None
        self._api: Optional[Api] = None
        self._owned = True
        self._processes: List[subprocess.Popen] = []

    # Lifecycle -------------------------------------------------------------------------

    def experiment_file(self) -> str:
        """The experiment file this writes for nextmini."""
        lines = []
        if self.name:
            lines.append(f"name = {_toml_value(self.name)}")
        if self.protocol:
            lines.append(f"protocol = {_toml_value(self.protocol)}")
        if self.scheduler:
            lines.append(f"scheduler_type = {_toml_value(self.scheduler)}")
        if self.metrics_interval is not None:
            lines.append(f"metrics_collection_interval = {_toml_value(self.metrics_interval)}")
        if self.db:
            lines += ["", "[db]", f"url = {_toml_value(self.db)}"]
        lines += ["", "[node_settings]", f'prefix = "{self.prefix}"', f'underlay_base = "{self.underlay_base}"']
        if not self.dataplane:
            # Nodes and links only: no TUN devices, no forwarding (flows and routes need them).
            lines.append("dataplane = false")
        if self.links:
            lines += ["", "[links]"] + [f"{k} = {_toml_value(v)}" for k, v in self.links.items()]
        lines += ["", self.topology.toml()]
        for node in self.max_nodes:
            lines += ["", "[[nodes]]", f"node_id = {int(node)}", 'operating_mode = "max"']
        if self.extra:
            lines += ["", self.extra]
        return "\n".join(lines)

    def start(self) -> "Experiment":
        """Brings the experiment up; returns once every node is ready."""
        if self.state_dir is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix=f"nextmini-{self.prefix}-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / "experiment.toml"
        path.write_text(self.experiment_file())
        port = self.port or _free_port()
        command = [binary(), "up", str(path), "--detach", "--state-dir", str(self.state_dir), "--port", str(port)]
        if self.token:
            command.append("--token")
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode != 0:
            self._remove_state()
            raise NextminiError(_last_error(out.stderr or out.stdout))
        run = self._run_file()
        self._api = Api(run["api"], token=run.get("token"))
        return self

    @property
    def url(self) -> str:
        """The live view (and the API) of this experiment."""
        return self.api.base + "/"

    def _run_file(self) -> Dict[str, Any]:
        return json.loads((Path(self.state_dir) / "run.json").read_text())

    def wait_ready(self, timeout: float = 60.0) -> Dict[str, Any]:
        """Waits until the topology is ready (as `start` already does); the status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if status["phase"] == "ready":
                return status
            if time.monotonic() > deadline:
                raise NextminiError(f"not ready after {timeout} s: {status}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Tears the experiment down and removes what it left (also after a crash)."""
        if not self._owned or self.state_dir is None:
            return
        self._stop_processes()
        try:
            if (Path(self.state_dir) / "run.json").exists():
                subprocess.run(
                    [binary(), "down", "--state-dir", str(self.state_dir)],
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
        finally:
            # Its own prefix, after `down`: whatever is left is ours to remove.
            subprocess.run([binary(), "cleanup", "--prefix", self.prefix, "--force"], capture_output=True, text=True)
            self._remove_state()

    def _stop_processes(self) -> None:
        """Programs started with `node(n).popen` and still running: SIGTERM, then SIGKILL.
        (`nextmini exec` becomes the program, so the signal reaches it.)"""
        running = [p for p in self._processes if p.poll() is None]
        for p in running:
            p.terminate()
        deadline = time.monotonic() + 2
        for p in running:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._processes.clear()

    def _remove_state(self) -> None:
        if self._own_state and self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> "Experiment":
        if self._api is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @classmethod
    def attach(cls, state_dir: Union[str, Path] = "/var/lib/nextmini", api: Optional[str] = None) -> "Experiment":
        """An experiment that is already running (`nextmini up --detach`, or a head's at
        `api`); leaving a `with` block does not tear it down."""
        exp = cls.__new__(cls)
        exp.state_dir = Path(state_dir)
        exp._own_state = False
        exp._owned = False
        exp._processes = []
        exp.prefix = ""
        token = None
        if api is None:
            try:
                run = json.loads((exp.state_dir / "run.json").read_text())
            except FileNotFoundError:
                raise NextminiError(
                    f"no running experiment in {state_dir}: start one with `nextmini up <file>`"
                ) from None
            api, token = run["api"], run.get("token")
        exp._api = Api(api, token=token)
        return exp

    # Control ---------------------------------------------------------------------------

    @property
    def api(self) -> Api:
        if self._api is None:
            raise NextminiError("the experiment is not running: use `with Experiment(...)` or start()")
        return self._api

    def status(self) -> Dict[str, Any]:
        return self.api.get("/api/status")

    def nodes(self) -> List[Dict[str, Any]]:
        return self.api.get("/api/nodes")

    def link(self, a: int, b: int) -> "Link":
        return Link(self, a, b)

    def route(self, src: int, dst: int) -> "Route":
        return Route(self, src, dst)

    def node(self, node_id: int) -> "Node":
        return Node(self, node_id)

    def flow(
        self,
        src: int,
        dst: int,
        *,
        bytes: Optional[Union[int, str]] = None,
        duration: Optional[float] = None,
        rate: Optional[Union[int, str]] = None,
        cc: Optional[str] = None,
        weight: Optional[int] = None,
        start: Optional[str] = None,
        transport: str = "tcp",
    ) -> "Flow":
        """Starts a flow from src to dst: `bytes` ("10MB") or `duration` (seconds); over TCP,
        or with transport="lossless_unicast" (UDP at `rate`, acknowledged and repaired)."""
        if (bytes is None) == (duration is None):
            raise ValueError("give a flow bytes= or duration=, one of them")
        spec: Dict[str, Any] = {
            "flow_len": {"Bytes": parse_bytes(bytes)} if bytes is not None else {"Duration": float(duration)},
            "transport": transport,
        }
        if rate is not None:
            spec["flow_rate"] = parse_rate_bytes(rate)
        if weight is not None:
            spec["flow_weight"] = weight
        if cc is not None:
            spec["cc"] = cc
        body: Dict[str, Any] = {"src_node_id": src, "dst_node_id": dst, "flow_spec": spec}
        if start is not None:
            body["start"] = start
        return Flow(self, self.api.post("/api/flows", body)["id"])

    def group(
        self, source: int, *, members: Iterable[int] = (), address: Optional[str] = None
    ) -> "Group":
        """Creates a multicast group of `source` (an (S,G) group) at `address`, else at the
        run's pool's next free address (239.255.0.1, …), with these members. Programs in nodes
        join and leave it with ordinary sockets (IP_ADD_MEMBERSHIP on the node's tun0) too."""
        body = {"source": source, "members": list(members), "address": address}
        return Group(self, self.api.post("/api/groups", body))

    def groups(self) -> List["Group"]:
        return [Group(self, row) for row in self.api.get("/api/groups")]

    def flows(self):
        """Every generated flow (a DataFrame with pandas)."""
        return _table(self.api.get("/api/flows"))

    @property
    def metrics(self) -> "Metrics":
        return Metrics(self)


class Link:
    """Link a-b, both directions."""

    def __init__(self, exp: Experiment, a: int, b: int):
        self.exp, self.a, self.b = exp, a, b

    def set(self, **params: Any) -> Dict[str, Any]:
        """Changes it while traffic flows: rate, delay, jitter, loss, queue, up=False, …"""
        return self.exp.api.post(f"/api/links/{self.a}/{self.b}", params)

    def down(self) -> Dict[str, Any]:
        return self.set(up=False)

    def up(self) -> Dict[str, Any]:
        return self.set(up=True)

    def show(self) -> Dict[str, Any]:
        """Its parameters and counters, each direction."""
        key = (min(self.a, self.b), max(self.a, self.b))
        for row in self.exp.api.get("/api/links"):
            if (row["a"], row["b"]) == key:
                return row
        raise NextminiError(f"no link {self.a}-{self.b} in the experiment")


class Route:
    """Traffic from src to dst."""

    def __init__(self, exp: Experiment, src: int, dst: int):
        self.exp, self.src, self.dst = exp, src, dst

    def pin(
        self,
        path: Optional[Sequence[int]] = None,
        *,
        dag: Optional[Iterable[Sequence[int]]] = None,
        flow: Optional["Flow"] = None,
    ) -> Dict[str, Any]:
        """Pins it to a path ([1, 3, 7, 8]) or a DAG's edges, for all its traffic or one flow;
        returns once every node whose table changed has it (nodes, applied_ms)."""
        if (path is None) == (dag is None):
            raise ValueError("give pin() a path or a dag, one of them")
        if path is not None:
            path = list(path)
            if path[0] != self.src or path[-1] != self.dst:
                raise ValueError(f"the path must go from {self.src} to {self.dst}")
            edges = [[a, b] for a, b in zip(path, path[1:])]
        else:
            edges = [list(e) for e in dag]
        body = {"src": self.src, "dst": self.dst, "edges": edges, "flow": flow.id if isinstance(flow, Flow) else flow}
        return self.exp.api.post("/api/routes", body)

    def clear(self) -> Dict[str, Any]:
        """Back to the shortest paths."""
        return self.exp.api.post("/api/routes/clear", {"src": self.src, "dst": self.dst})

    def show(self, flow: Optional["Flow"] = None) -> Dict[str, Any]:
        """The link directions its traffic takes now (and one flow's path)."""
        q = f"/api/routes/path?src={self.src}&dst={self.dst}"
        if flow is not None:
            q += f"&flow={flow.id if isinstance(flow, Flow) else flow}"
        return self.exp.api.get(q)


class Group:
    """A multicast group: its address, source, members and trees (`row`, as last seen)."""

    def __init__(self, exp: Experiment, row: Dict[str, Any]):
        self.exp, self.row = exp, row
        self.address, self.source = row["group"], row["source"]

    def _change(self, op: str, body: Dict[str, Any]) -> "Group":
        self.row = self.exp.api.post(f"/api/groups/{self.address}/{op}", body)
        return self

    def join(self, *nodes: int) -> "Group":
        return self._change("join", {"nodes": list(nodes)})

    def leave(self, *nodes: int) -> "Group":
        return self._change("leave", {"nodes": list(nodes)})

    def set_trees(self, trees: Iterable[Any]) -> "Group":
        """Trees from outside: each a dict {"tree_id", "weight", "edges"} or a tuple
        (tree_id, weight, edges), edges from parent to child starting at the source; flows
        spread over them by weight (a consistent hash)."""
        specs = []
        for t in trees:
            if not isinstance(t, dict):
                tree_id, weight, edges = t
                t = {"tree_id": tree_id, "weight": weight, "edges": edges}
            specs.append({**t, "edges": [list(e) for e in t["edges"]]})
        return self._change("trees", {"trees": specs})

    def shortest_path_tree(self) -> "Group":
        """Back to the shortest-path tree from the source."""
        return self._change("trees", {"trees": None})

    def delete(self) -> None:
        self._change("delete", {})

    def refresh(self) -> "Group":
        for row in self.exp.api.get("/api/groups"):
            if row["group"] == self.address:
                self.row = row
                return self
        raise NextminiError(f"no group {self.address} in the experiment")

    @property
    def members(self) -> List[int]:
        return self.refresh().row["members"]

    @property
    def trees(self) -> List[Dict[str, Any]]:
        """Each tree as built: tree_id, weight, edges (pruned to members), unreached."""
        return self.refresh().row["trees"]


class Node:
    """One node: run commands in its namespace."""

    def __init__(self, exp: Experiment, node_id: int):
        self.exp, self.id = exp, node_id

    @property
    def address(self) -> str:
        """Its overlay address (10.0.0.<id> by default)."""
        base = self.exp._run_file().get("overlay_base") or "10.0.0.0"
        a = [int(x) for x in base.split(".")]
        value = ((a[0] << 24) | (a[1] << 16) | (a[2] << 8) | a[3]) + self.id
        return ".".join(str((value >> s) & 255) for s in (24, 16, 8, 0))

    def _command(self, command: Union[str, Sequence[str]]) -> List[str]:
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        return [binary(), "exec", str(self.id), "--state-dir", str(self.exp.state_dir), "--"] + argv

    def exec(
        self, command: Union[str, Sequence[str]], *, check: bool = False, timeout: Optional[float] = None
    ) -> subprocess.CompletedProcess:
        """Runs a command (a shell line, or an argument list) in the node; its output as text.
        The program finds its node in $NEXTMINI_NODE_ID and the controller in $NEXTMINI_API."""
        out = subprocess.run(self._command(command), capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise NextminiError(f"node {self.id}: {command!r} exited {out.returncode}: {out.stderr.strip()}")
        return out

    def popen(self, command: Union[str, Sequence[str]], **kwargs: Any) -> subprocess.Popen:
        """Starts a command in the node and returns at once; the experiment stops it when it
        ends, if it is still running."""
        process = subprocess.Popen(self._command(command), **kwargs)
        self.exp._processes.append(process)
        return process


class Flow:
    """A generated flow: its row from the controller."""

    def __init__(self, exp: Experiment, flow_id: int):
        self.exp, self.id = exp, flow_id

    @property
    def row(self) -> Dict[str, Any]:
        for f in self.exp.api.get("/api/flows"):
            if f["id"] == self.id:
                return f
        raise NextminiError(f"no flow {self.id} in the experiment")

    @property
    def state(self) -> str:
        return self.row["state"]

    def wait(self, timeout: float = 120.0) -> Dict[str, Any]:
        """Waits until it has finished (or failed: NextminiError with the reason); its row."""
        deadline = time.monotonic() + timeout
        while True:
            row = self.row
            if row["state"] == "finished":
                return row
            if row["state"] == "failed":
                raise NextminiError(f"flow {self.id} failed: {row.get('failure')}")
            if time.monotonic() > deadline:
                raise NextminiError(f"flow {self.id} is still {row['state']} after {timeout} s")
            time.sleep(0.1)

    @property
    def fct(self) -> Optional[float]:
        """Its completion time in seconds, once finished."""
        return self.row.get("fct_seconds")

    @property
    def throughput_bps(self) -> Optional[float]:
        return self.row.get("throughput_bps")


class Metrics:
    """What the store has of this run, as DataFrames with pandas (else lists of records)."""

    def __init__(self, exp: Experiment):
        self.exp = exp

    def links(self, link: Optional[Sequence[int]] = None, since_ns: int = 0):
        """Every link direction's samples (or one link's, both directions): time_ns, src,
        dst, bytes, packets, dropped, queue_packets, utilization."""
        q = f"/api/metrics/links?since_ns={since_ns}"
        if link is not None:
            q += f"&src={link[0]}&dst={link[1]}"
        return _table(self.exp.api.get(q))

    def flow(self, flow: Union["Flow", int], since_ns: int = 0):
        """A generated flow's samples on every link direction it crossed."""
        flow_id = flow.id if isinstance(flow, Flow) else flow
        return _table(self.exp.api.get(f"/api/metrics/flows/{flow_id}?since_ns={since_ns}"))

    def flows(self):
        return self.exp.flows()

    def prometheus(self) -> str:
        """The controller's /metrics text."""
        return self.exp.api.get("/metrics")
