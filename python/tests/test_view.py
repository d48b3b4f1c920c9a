"""The live view in a real browser (Debian's chromium, driven through chromium-driver):
the page draws the experiment, follows changes made elsewhere, and changes links itself when
the experiment has a token."""

import json
import re
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from nextmini import Experiment, binary, topo
from webdriver import Browser


@pytest.fixture
def browser(root_only):
    with Browser() as b:
        yield b


def nextmini(exp, *args):
    return subprocess.run([binary(), *args, "--state-dir", str(exp.state_dir)], capture_output=True, text=True)


def test_the_page_draws_a_100_node_experiment_and_follows_a_link_taken_down_elsewhere(browser):
    with Experiment(topo.ring(100), links={"delay": "1ms"}) as exp:
        browser.get(exp.url)
        browser.wait_for("return window.nextmini && nextmini.ready")
        assert browser.run("return [nextmini.order(), nextmini.size()]") == [100, 100]
        counts = browser.text("#counts")
        assert "100 nodes (100 ready, 0 failed), 100 links (100 up), ready" in counts, counts
        assert browser.run("return nextmini.linkState(3, 4)") == "up"
        out = nextmini(exp, "link", "set", "3-4", "--down")
        assert out.returncode == 0, out.stderr
        changed = time.monotonic()
        browser.wait_for("return nextmini.linkState(3, 4) === 'down'", timeout=3)
        assert time.monotonic() - changed < 3
        assert "99 up" in browser.text("#counts")
        # Read-only without a token: the link's panel has no form.
        browser.type("#find", "3-4\n")
        browser.wait_for("return document.getElementById('link-state')")
        assert browser.text("#link-state") == "down"
        assert "Read-only" in browser.text("#panel")


def test_a_delay_edited_on_the_page_shows_in_link_show_and_in_ping(browser):
    with Experiment(topo.ring(6), links={"delay": "1ms"}, token=True) as exp:
        browser.get(exp.url)
        browser.wait_for("return window.nextmini && nextmini.ready")
        browser.type("#find", "1-2\n")
        browser.wait_for("return document.getElementById('edit')")
        browser.type("#edit input[name=delay]", "25ms")
        browser.type("#edit input[name=token]", exp.api.token)
        browser.click("#apply")
        result = browser.wait_for("const r = document.getElementById('edit-result'); return r && r.textContent")
        assert result.startswith("applied") and "25ms" in result, result
        shown = nextmini(exp, "link", "show", "1-2").stdout
        assert re.search(r"\| 1→2 \| up \| unshaped \| 25ms \|", shown), shown
        rtt = exp.node(1).exec("ping -c 3 -i 0.2 10.0.0.2", check=True).stdout.splitlines()[-1]
        # The least of three: the emulated delay sets the floor, a busy machine only adds.
        assert 49.7 < float(rtt.split("=")[1].split("/")[0]) < 52.5, rtt
        # Changes without the token are refused, by the API as by the page.
        request = urllib.request.Request(
            exp.api.base + "/api/links/1/2",
            data=json.dumps({"delay": "1ms"}).encode(),
            method="POST",
            headers={"content-type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request)
        assert refused.value.code == 401
        # nextmini's own commands carry it.
        assert nextmini(exp, "link", "set", "1-2", "--delay", "2ms").returncode == 0


def test_selecting_a_flow_highlights_its_path(browser):
    with Experiment(topo.ring(8), links={"delay": "1ms"}) as exp:
        exp.route(1, 4).pin([1, 8, 7, 6, 5, 4])
        flow = exp.flow(1, 4, duration=5)
        deadline = time.monotonic() + 10
        while flow.state != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        browser.get(exp.url)
        browser.wait_for("return window.nextmini && nextmini.ready")
        edges = browser.run(f"return nextmini.select('flow {flow.id}').then(() => nextmini.highlighted())")
        assert sorted(edges) == ["1-8", "4-5", "5-6", "6-7", "7-8"], edges
        browser.wait_for(f"return document.querySelector('tr.flow[data-id=\"{flow.id}\"]')")
