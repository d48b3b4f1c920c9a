"""Topologies and units, without nextmini running."""

import networkx as nx
import pytest

from nextmini import Experiment, parse_bytes, parse_rate_bytes, topo


def test_sizes_and_rates_read_as_written():
    assert parse_bytes("10MB") == 10_000_000
    assert parse_bytes("64KiB") == 65_536
    assert parse_bytes(1500) == 1500
    assert parse_rate_bytes("5MB/s") == 5_000_000
    assert parse_rate_bytes("40mbit") == 5_000_000
    with pytest.raises(ValueError, match="not a size"):
        parse_bytes("ten")
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate_bytes("5 parsecs")


def test_a_networkx_graph_becomes_nodes_links_and_their_parameters():
    g = nx.Graph()
    g.add_edge("a", "b", delay="5ms", rate="10mbit", colour="red")
    g.add_edge("b", "c", delay="10ms")
    t = topo.from_networkx(g)
    assert t.n_nodes == 3 and t.labels == {1: "a", 2: "b", 3: "c"}
    text = t.toml()
    assert "n_nodes = 3" in text and "edges = [[1, 2], [2, 3]]" in text
    assert 'between = [1, 2]\ndelay = "5ms"\nrate = "10mbit"' in text
    assert "colour" not in text
    back = t.to_networkx()
    assert back.edges[1, 2]["delay"] == "5ms" and back.number_of_edges() == 2


def test_presets_and_bad_input():
    assert topo.fat_tree(4).n_nodes == 36
    assert 'type = "fat_tree"\nfat_tree_config = { k = 4 }' in topo.fat_tree(4).toml()
    t = topo.Topology()
    t.add_node()
    with pytest.raises(ValueError, match="node 2 is not in the topology"):
        t.add_link(1, 2)
    with pytest.raises(ValueError, match="unknown link parameter"):
        topo.ring(4).link(1, 2, latency="5ms")
    with pytest.raises(ValueError, match="unknown link parameter"):
        Experiment(topo.ring(4), links={"bandwidth": "1gbit"})


def test_an_experiment_file_carries_its_prefix_subnet_and_links():
    exp = Experiment(topo.ring(4), links={"rate": "1gbit", "delay": "1ms"}, name="r4", scheduler="wrr")
    text = exp.experiment_file()
    assert f'prefix = "{exp.prefix}"' in text and exp.prefix.startswith("py")
    assert '[links]\nrate = "1gbit"\ndelay = "1ms"' in text
    assert 'scheduler_type = "wrr"' in text and 'name = "r4"' in text
    text = Experiment(topo.line(3), protocol="quic", max_nodes=[3, 2, 3]).experiment_file()
    assert 'protocol = "quic"' in text
    assert text.count('operating_mode = "max"') == 2 and "node_id = 2" in text and "node_id = 3" in text
