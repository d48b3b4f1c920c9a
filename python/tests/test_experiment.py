"""Real experiments driven from Python: namespaces, TUN devices, ping and TCP flows."""

import json
import subprocess
import sys
import time
from pathlib import Path

import networkx as nx
import pandas
import pytest

from nextmini import Experiment, NextminiError, topo

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "python"


def least_rtt_ms(ping_output: str) -> float:
    """The least RTT of ping's replies: the emulated delay is what every reply waits at least,
    and a busy host (two cores, the kernel freeing an earlier test's namespaces) only adds to
    some of them; a wrong delay or path still shows in every reply."""
    line = next(l for l in ping_output.splitlines() if l.startswith("rtt"))
    return float(line.split("=")[1].split("/")[0])


def namespaces(prefix: str):
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if l.startswith(prefix)]


def test_a_networkx_topology_with_per_edge_delays_pings_as_configured(root_only):
    g = nx.Graph()
    g.add_edge("a", "b", delay="5ms")
    g.add_edge("b", "c", delay="10ms")
    with Experiment(topo.from_networkx(g)) as exp:
        exp.wait_ready()
        rtt = least_rtt_ms(exp.node(1).exec("ping -c 5 -i 0.2 10.0.0.3", check=True).stdout)
        assert 29.6 <= rtt < 31.0, rtt


def test_link_changes_and_routes_pinned_from_python_take_effect(root_only):
    with Experiment(topo.ring(6), links={"delay": "1ms"}) as exp:
        ping = lambda: least_rtt_ms(exp.node(1).exec("ping -c 3 -i 0.2 10.0.0.2", check=True).stdout)
        assert 1.7 <= ping() < 3.0
        # Both directions: 10 ms each way.
        exp.link(1, 2).set(delay="10ms")
        assert 19.7 <= ping() < 21.5
        assert exp.link(1, 2).show()["a_to_b"]["params"]["delay"] == "10ms"
        applied = exp.route(1, 2).pin([1, 6, 5, 4, 3, 2])
        assert applied["nodes"] >= 5
        # Out the long way (5 links of 1 ms), back over the 10 ms link.
        assert 14.5 <= ping() < 16.5
        hops = exp.node(1).exec("traceroute -n -I -q 1 -w 1 10.0.0.2", check=True).stdout
        assert [l.split()[1] for l in hops.splitlines()[1:]] == [f"10.0.0.{n}" for n in (6, 5, 4, 3, 2)]
        assert exp.route(1, 2).show()["edges"] == [[1, 6], [3, 2], [4, 3], [5, 4], [6, 5]]
        exp.route(1, 2).clear()
        assert 19.7 <= ping() < 21.5
        with pytest.raises(NextminiError, match="no link between nodes 1 and 3"):
            exp.route(1, 3).pin([1, 3])


def test_a_flows_completion_time_and_the_metrics_come_back_as_dataframes(root_only):
    with Experiment(topo.line(3), links={"rate": "20mbit", "delay": "1ms"}, metrics_interval="250ms") as exp:
        f = exp.flow(1, 3, bytes="2MB", cc="reno")
        row = f.wait(timeout=30)
        # 2 MB at 20 Mbit/s: 0.8 s of payload, a little more with headers and slow start.
        assert 0.8 < f.fct < 1.2, row
        assert row["tcp"]["srtt_us"] > 1000
        time.sleep(0.6)
        links = exp.metrics.links()
        assert isinstance(links, pandas.DataFrame)
        carried = links[(links.src == 1) & (links.dst == 2)].bytes.sum()
        assert carried > 2_000_000
        per_link = exp.metrics.flow(f).groupby(["local", "remote"]).bytes.sum()
        assert per_link[(1, 2)] >= 2_000_000 and per_link[(2, 3)] >= 2_000_000
        flows = exp.flows()
        assert list(flows.state) == ["finished"]
        assert "nextmini_flow_completion_seconds_count 1" in exp.metrics.prometheus()
        with pytest.raises(NextminiError, match="dst_node_id = 9 is not a node"):
            exp.flow(1, 9, bytes="1MB")


def test_the_node_side_api_sends_and_receives_between_two_nodes(root_only):
    py = sys.executable
    receiver = (
        "from nextmini import node\n"
        "node.wait_for_topology_ready(5000)\n"
        "inbox = node.register_receiver_from_node(1)\n"
        "print('listening', flush=True)\n"
        "first, second = inbox.recv(timeout_ms=10000), inbox.recv(timeout_ms=10000)\n"
        "print(len(first), second.decode(), node.network_info(), flush=True)\n"
    )
    sender = (
        "from nextmini import node\n"
        "node.send_to_node(3, bytes(range(256)) * 4096)\n"
        "node.send_to_node(3, b'second')\n"
    )
    with Experiment(topo.line(3), links={"delay": "2ms"}) as exp:
        rx = exp.node(3).popen([py, "-c", receiver], stdout=subprocess.PIPE, text=True)
        assert rx.stdout.readline().strip() == "listening"
        out = exp.node(1).exec([py, "-c", sender], timeout=30)
        assert out.returncode == 0, out.stderr
        line = rx.communicate(timeout=30)[0].strip()
        assert line == "1048576 second (3, '10.0.0.3')", line


def test_an_exception_in_the_with_block_leaves_nothing_behind(root_only):
    exp = Experiment(topo.ring(4))
    with pytest.raises(RuntimeError, match="boom"):
        with exp:
            assert namespaces(exp.prefix)
            raise RuntimeError("boom")
    assert namespaces(exp.prefix) == []
    assert not exp.state_dir.exists()
    # And a file nextmini refuses is an exception with its one-line message, nothing left.
    bad = Experiment(topo.ring(4), links={"delay": "5 parsecs"})
    with pytest.raises(NextminiError, match="delay"):
        bad.start()
    assert namespaces(bad.prefix) == []


def test_attaching_to_a_running_experiment(root_only):
    with Experiment(topo.line(2)) as exp:
        other = Experiment.attach(exp.state_dir)
        assert other.status()["phase"] == "ready"
        with other:
            pass
        # Leaving the attached one's block does not tear the experiment down.
        assert exp.status()["ready"] == 2
    with pytest.raises(NextminiError, match="no running experiment"):
        Experiment.attach("/nonexistent")


def test_the_gym_example_runs_a_few_steps(root_only):
    sys.path.insert(0, str(EXAMPLES))
    try:
        import routing_gym
    finally:
        sys.path.pop(0)
    rewards = routing_gym.main(steps=2)
    assert len(rewards) == 2 and all(r < 0 for r in rewards)


def test_the_readmes_example_runs_as_written(root_only, capsys):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Python", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    printed = capsys.readouterr().out
    # What it prints: the flow's completion time, then ping's output over the slow link.
    assert 0 < float(printed.split()[0]) < 10, printed
    assert "3 received" in printed
    assert len(scope["links"]) > 0


def test_programs_started_in_nodes_are_the_processes_held_and_end_with_the_experiment(root_only):
    with Experiment(topo.ring(3)) as exp:
        p = exp.node(2).popen(["sleep", "300"], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while Path(f"/proc/{p.pid}/comm").read_text().strip() != "sleep":
            assert time.monotonic() < deadline, "nextmini exec did not become the program"
            time.sleep(0.02)
        # It runs in the node: its network namespace is the node's.
        ours = Path("/proc/self/ns/net").stat().st_ino
        assert Path(f"/proc/{p.pid}/ns/net").stat().st_ino != ours
    assert p.poll() is not None, "the program outlived its experiment"


def test_max_mode_nodes_forward_in_their_kernels_and_refuse_a_delay(root_only):
    with Experiment(topo.line(3), max_nodes=[1, 2, 3]) as exp:
        exp.wait_ready()
        routes = subprocess.run(
            ["ip", "-n", f"{exp.prefix}1", "route", "get", "10.0.0.3"], capture_output=True, text=True
        ).stdout
        assert "dev k2" in routes, routes
        exp.node(1).exec("ping -c 3 -i 0.2 10.0.0.3", check=True)
        with pytest.raises(NextminiError, match="max-mode"):
            exp.link(1, 2).set(delay="5ms")


def test_a_lossless_flow_with_fec_arrives_whole_over_a_lossy_link(root_only):
    extra = "[lossless_runtime_config]\nfec_enabled = true"
    with Experiment(topo.line(2), links={"delay": "5ms", "loss": "5%"}, extra=extra) as exp:
        exp.wait_ready()
        f = exp.flow(1, 2, bytes="2MB", rate="40mbit", transport="lossless_unicast")
        f.wait()
        assert f.row["state"] == "finished" and f.row["bytes"] == 2_000_000, f.row


SEND_TO_GROUP = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 8)
for i in range(int(sys.argv[2])):
    s.sendto(b"%d" % i, (sys.argv[1], 5000))
    time.sleep(0.002)
"""


def tun_rx(prefix: str, node: int) -> int:
    out = subprocess.run(
        ["ip", "netns", "exec", f"{prefix}{node}", "cat", "/sys/class/net/tun0/statistics/rx_packets"],
        capture_output=True, text=True, check=True,
    )
    return int(out.stdout)


def test_a_multicast_group_made_joined_left_and_given_trees_from_python(root_only):
    with Experiment(topo.ring(6), links={"delay": "1ms"}) as exp:
        exp.wait_ready()
        g = exp.group(1, members=[3])
        assert g.address == "239.255.0.1" and g.members == [3]
        g.join(4)
        assert g.members == [3, 4]

        def send(n: int) -> dict:
            before = {n_: tun_rx(exp.prefix, n_) for n_ in (3, 4, 5)}
            exp.node(1).exec(["python3", "-c", SEND_TO_GROUP, g.address, str(n)], check=True)
            time.sleep(0.3)
            return {n_: tun_rx(exp.prefix, n_) - before[n_] for n_ in before}

        assert send(50) == {3: 50, 4: 50, 5: 0}
        g.leave(4)
        assert send(50) == {3: 50, 4: 0, 5: 0}
        # Two trees from outside, one each way round the ring, 1 : 3.
        g.join(4)
        g.set_trees([(1, 1, [(1, 2), (2, 3), (3, 4)]), {"tree_id": 2, "weight": 3, "edges": [[1, 6], [6, 5], [5, 4], [4, 3]]}])
        assert [t["tree_id"] for t in g.trees] == [1, 2]
        got = send(40)
        assert got[3] == 40 and got[4] == 40, got
        with pytest.raises(NextminiError, match="two parents"):
            g.set_trees([(1, 1, [(1, 2), (2, 3), (1, 6), (6, 5), (5, 4), (4, 3), (2, 4)])])
        g.shortest_path_tree()
        assert len(g.trees) == 1
        g.delete()
        assert exp.groups() == []


def test_node_side_programs_join_a_group_and_send_to_it(root_only):
    py = sys.executable
    receiver = (
        "from nextmini import node\n"
        "rx = node.join_group('239.255.0.1', 5000)\n"
        "rx.settimeout(10)\n"
        "print('joined', flush=True)\n"
        "print(rx.recv(100).decode(), flush=True)\n"
    )
    sender = (
        "from nextmini import node\n"
        "node.group_sender().sendto(b'to all', ('239.255.0.1', 5000))\n"
    )
    with Experiment(topo.line(4), links={"delay": "1ms"}) as exp:
        exp.wait_ready()
        g = exp.group(1)
        rx = exp.node(4).popen([py, "-c", receiver], stdout=subprocess.PIPE, text=True)
        assert rx.stdout.readline().strip() == "joined"
        deadline = time.monotonic() + 10
        while g.members != [4]:
            assert time.monotonic() < deadline, "the join reached the controller"
            time.sleep(0.05)
        exp.node(1).exec([py, "-c", sender], check=True)
        assert rx.communicate(timeout=10)[0].strip() == "to all"
        # The program ended, its socket closed: the node left.
        deadline = time.monotonic() + 10
        while g.members != []:
            assert time.monotonic() < deadline, "the leave reached the controller"
            time.sleep(0.05)
