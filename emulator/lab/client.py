"""The CLI's side of the control plane: small JSON requests to a running lab's supervisor.

The standard library's urllib is enough for a handful of loopback requests and keeps
``siplab status`` quick to start.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from emulator.lab.state import LabHandle


class ControlError(Exception):
    """The lab refused or could not answer; ``str()`` is the lab's one-line reason."""


class LabClient:
    def __init__(self, handle: LabHandle, timeout: float = 30.0) -> None:
        self.handle = handle
        self.timeout = timeout

    def get(self, path: str, timeout: float | None = None) -> Any:
        return self._call("GET", path, None, timeout)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call("POST", path, body or {}, None)

    def _call(self, method: str, path: str, body: Any, timeout: float | None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.handle.control + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                payload = json.loads(exc.read() or b"{}")
            except ValueError:
                payload = {}
            if exc.code == 504 and isinstance(payload, dict) and "endpoints" in payload:
                return payload  # /wait timed out: the status still says where things stand
            message = payload.get("error") if isinstance(payload, dict) else None
            raise ControlError(message or f"lab answered HTTP {exc.code}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ControlError(
                f"cannot reach lab {self.handle.name!r} at {self.handle.control}: {reason}"
            ) from None

    def stream_events(self, since: int = 0, follow: bool = False) -> Iterator[dict[str, Any]]:
        query = f"/events?since={since}&follow={1 if follow else 0}"
        request = urllib.request.Request(self.handle.control + query)
        try:
            # No read timeout when following: events may be minutes apart.
            with urllib.request.urlopen(request, timeout=None if follow else self.timeout) as resp:
                for line in resp:
                    if line.strip():
                        yield json.loads(line)
        except (urllib.error.URLError, ConnectionError) as exc:
            raise ControlError(f"lost the lab's event stream: {exc}") from None
