"""A small W3C WebDriver client (urllib only) for Debian's chromium and chromium-driver:
enough to load the live view, read its state, type, click and take a screenshot."""

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """Headless Chromium driven through chromedriver; WebGL through SwiftShader."""

    def __init__(self, width: int = 1400, height: int = 900):
        driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
        self.port = _free_port()
        self.driver = subprocess.Popen(
            [driver, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                self._call("GET", "/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--use-angle=swiftshader",
            "--enable-unsafe-swiftshader",
            f"--window-size={width},{height}",
        ]
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"args": args}}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as r:
            return (json.loads(r.read().decode() or "{}") or {}).get("value")

    def _session(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base}/session/{self.session}{path}",
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                return json.loads(r.read().decode())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"webdriver {path}: {e.read().decode()[:500]}") from None

    def script_timeout(self, seconds: float) -> None:
        """How long one script may run (WebDriver's default is 30 s)."""
        self._session("POST", "/timeouts", {"script": int(seconds * 1000)})

    def get(self, url: str) -> None:
        self._session("POST", "/url", {"url": url})

    def run(self, script: str, *args):
        """Runs a function body in the page (`return …`); awaits a returned promise."""
        return self._session("POST", "/execute/async", {
            "script": "const done = arguments[arguments.length - 1];"
            f"Promise.resolve((function() {{ {script} }}).apply(null, Array.from(arguments).slice(0, -1)))"
            ".then(done, (e) => done({error: String(e)}));",
            "args": list(args),
        })

    def wait_for(self, script: str, timeout: float = 30.0, *args):
        """Polls `script` until it returns something truthy; that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(script, *args)
            if value and not (isinstance(value, dict) and "error" in value):
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{script!r} still {value!r} after {timeout} s")
            time.sleep(0.1)

    def find(self, css: str) -> str:
        return self._session("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def type(self, css: str, text: str) -> None:
        element = self.find(css)
        self._session("POST", f"/element/{element}/value", {"text": text})

    def click(self, css: str) -> None:
        element = self.find(css)
        self._session("POST", f"/element/{element}/click", {})

    def text(self, css: str) -> str:
        element = self.find(css)
        return self._session("GET", f"/element/{element}/text")

    def screenshot(self, path) -> None:
        with open(path, "wb") as f:
            f.write(base64.b64decode(self._session("GET", "/screenshot")))

    def close(self) -> None:
        try:
            self._session("DELETE", "")
        finally:
            self.driver.terminate()
            self.driver.wait(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
