"""JSON over HTTP with the standard library; nextmini's refusals become NextminiError."""

import json
import urllib.error
import urllib.request
from typing import Any, Optional

from .errors import NextminiError


class Api:
    """A controller's HTTP API at `base` (http://host:port)."""

    def __init__(self, base: str, timeout: float = 60.0, token: Optional[str] = None):
        self.token = token
        self.base = base.rstrip("/")
        if not self.base.startswith("http"):
            self.base = "http://" + self.base
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Optional[Any] = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"content-type": "application/json"} if data is not None else {},
        )
        if self.token:
            request.add_header("authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as e:
            message = e.read().decode().strip() or f"the controller answered {e.code}"
            raise NextminiError(message) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            raise NextminiError(
                f"the controller at {self.base} does not answer ({e}): is the experiment still running?"
            ) from None
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self._call("POST", path, {} if body is None else body)
