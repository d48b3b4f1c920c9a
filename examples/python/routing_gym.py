"""A gym-style environment over a running nextmini experiment: route choices as actions,
link load as observations, flow completion times as reward. A random policy runs a few steps:

    sudo NEXTMINI_BIN=target/release/nextmini python3 examples/python/routing_gym.py 5

Observation: for every link direction, its utilisation and queue depth in the latest metrics
interval. Action: for each (src, dst) pair, which of its candidate paths to pin. Reward: minus
the mean completion time of one flow per pair, sent after the routes are in place.
"""

import random
import sys
import time
from typing import Dict, List, Sequence, Tuple

from nextmini import Experiment, topo

Pair = Tuple[int, int]


class RoutingEnv:
    def __init__(self, exp: Experiment, paths: Dict[Pair, List[Sequence[int]]], flow_bytes: str = "400KB"):
        self.exp = exp
        self.paths = paths
        self.flow_bytes = flow_bytes
        self.since_ns = 0

    @property
    def action_sizes(self) -> List[int]:
        return [len(p) for p in self.paths.values()]

    def observe(self) -> Dict[Tuple[int, int], Tuple[float, int]]:
        """(utilisation, queue depth) per link direction, from the latest interval."""
        rows = self.exp.metrics.links(since_ns=self.since_ns)
        records = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
        latest: Dict[Tuple[int, int], Tuple[float, int]] = {}
        for r in records:
            latest[(r["src"], r["dst"])] = (r["utilization"] or 0.0, r["queue_packets"])
            self.since_ns = max(self.since_ns, r["time_ns"])
        return latest

    def reset(self):
        self.exp.api.post("/api/routes/clear", {})
        return self.observe()

    def step(self, action: Sequence[int]):
        for (pair, choices), choice in zip(self.paths.items(), action):
            self.exp.route(*pair).pin(choices[choice])
        flows = [self.exp.flow(src, dst, bytes=self.flow_bytes) for src, dst in self.paths]
        fcts = [f.wait(timeout=60)["fct_seconds"] for f in flows]
        # One metrics interval, so the observation covers the flows.
        time.sleep(0.3)
        reward = -sum(fcts) / len(fcts)
        return self.observe(), reward, False, {"fct": fcts}


def main(steps: int = 3) -> List[float]:
    # Two pairs across a ring of 6: each can go either way round.
    paths = {
        (1, 4): [[1, 2, 3, 4], [1, 6, 5, 4]],
        (2, 5): [[2, 3, 4, 5], [2, 1, 6, 5]],
    }
    rewards = []
    with Experiment(
        topo.ring(6), links={"rate": "20mbit", "delay": "1ms", "queue": 200}, metrics_interval="250ms"
    ) as exp:
        env = RoutingEnv(exp, paths)
        env.reset()
        for step in range(steps):
            action = [random.randrange(n) for n in env.action_sizes]
            obs, reward, _, info = env.step(action)
            busiest = max(obs.items(), key=lambda kv: kv[1][0]) if obs else None
            print(f"step {step}: action {action}, reward {reward:.3f} s, fcts {info['fct']}, busiest {busiest}")
            rewards.append(reward)
    return rewards


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
