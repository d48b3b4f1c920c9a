#!/usr/bin/env python3
"""The live view's cost at 100, 1,000 and 10,000 nodes in headless Chromium (software WebGL,
SwiftShader: no GPU on this machine), and a screenshot of a 1,000-node ring under load.

    sudo NEXTMINI_BIN=target/release/nextmini /tmp/nextmini-venv/bin/python scripts/bench-view.py [docs/live-view.png]

Needs root, chromium, chromium-driver, iperf3, and the Python package (pip install ./python).
Per size: time to the first frame, the JavaScript cost of applying one pushed frame (node
states, link loads) and of drawing the whole graph, and frames per second with the graph drawn
again every frame. 10,000 nodes run without TUN devices (this machine's descriptor limit).
"""

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python" / "tests"))

from nextmini import Experiment, topo  # noqa: E402
from webdriver import Browser  # noqa: E402

SHOT = sys.argv[1] if len(sys.argv) > 1 else None


def measure(n: int, dataplane: bool = True, load: bool = False):
    links = {"rate": "10mbit", "delay": "1ms", "queue": 200}
    with Experiment(topo.ring(n), links=links, dataplane=dataplane, metrics_interval=1) as exp:
        servers = []
        if load:
            # Eight iperf3 streams a quarter of the ring long: a band of loaded links.
            for k in range(8):
                src = 1 + k * (n // 8)
                dst = src + n // 40
                servers.append(
                    exp.node(dst).popen(["iperf3", "-s", "-1"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
            time.sleep(0.5)
            clients = [
                exp.node(1 + k * (n // 8)).popen(
                    ["iperf3", "-c", exp.node(1 + k * (n // 8) + n // 40).address, "-t", "60"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                )
                for k in range(8)
            ]
            time.sleep(3)
        with Browser() as b:
            # At 10,000 nodes one software-rendered frame can take seconds.
            b.script_timeout(100)
            started = time.monotonic()
            b.get(exp.url)
            b.wait_for("return window.nextmini && nextmini.ready", timeout=120)
            first = time.monotonic() - started
            b.wait_for("return nextmini.stats.updates >= 6", timeout=60)
            stats = b.run("return nextmini.stats")
            if SHOT and load:
                b.screenshot(SHOT)
            fps = b.run("return nextmini.measureFps(8000)")
        if load:
            for c in clients:
                c.kill()
            for s in servers:
                s.kill()
    return first, stats, fps


print("| nodes | first frame | applying a pushed frame (mean) | drawing the graph (JS) | frames per second, redrawn every frame |")
print("|---:|---:|---:|---:|---:|")
for n, dataplane, load in [(100, True, False), (1000, True, True), (10000, False, False)]:
    first, stats, fps = measure(n, dataplane, load)
    print(
        f"| {n:,} | {first:.1f} s | {stats['meanUpdateMs']:.1f} ms | {fps['drawMs']:.1f} ms | {fps['fps']:.1f} |"
    )
