"""The synchronous side of the control plane: small JSON requests to a lab's supervisor.

The standard library's ``http.client`` is enough for a handful of loopback requests and keeps
``siplab kill`` quick to start (no asyncio, no aiohttp, no pydantic on this path). Every call
is bounded: a request by its timeout, an event stream by an overall deadline.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from emulator.lab.state import LabHandle


class ControlError(Exception):
    """The lab refused or could not answer; ``str()`` is the lab's one-line reason."""


def auth_headers(handle: LabHandle) -> dict[str, str]:
    """The bearer token a control plane beyond loopback requires (none on loopback)."""
    return {"Authorization": f"Bearer {handle.token}"} if handle.token else {}


class LabClient:
    def __init__(self, handle: LabHandle, timeout: float = 30.0) -> None:
        self.handle = handle
        self.timeout = timeout
        parts = urlsplit(handle.control)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._headers = auth_headers(handle)

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        conn = self._connection(timeout or self.timeout)
        try:
            headers = {"Content-Type": "application/json", **self._headers}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise ControlError(
                f"cannot reach lab {self.handle.name!r} at {self.handle.control}: {reason}"
            ) from None
        finally:
            conn.close()
        payload = _json_or_none(raw)
        if response.status >= 400:
            if response.status == 504 and isinstance(payload, dict) and "endpoints" in payload:
                return payload  # /wait timed out: the status still says where things stand
            raise ControlError(_error_of(response.status, raw))
        return payload

    def stream_events(
        self, since: int = 0, follow: bool = False, deadline: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Events from ``since`` on; following, until ``deadline`` (monotonic) if one is given.

        Past the deadline the stream ends quietly; the caller decides whether that is a failure.
        """
        conn = self._connection(self._remaining(deadline) if follow else self.timeout)
        try:
            path = f"/events?since={since}&follow={1 if follow else 0}"
            conn.request("GET", path, headers=self._headers)
            response = conn.getresponse()
            if response.status >= 400:
                raise ControlError(_error_of(response.status, response.read()))
            while True:
                if deadline is not None and conn.sock is not None:
                    remaining = self._remaining(deadline)
                    if remaining is not None and remaining <= 0:
                        return
                    conn.sock.settimeout(remaining)
                line = response.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        except TimeoutError:
            return
        except (OSError, http.client.HTTPException) as exc:
            raise ControlError(f"lost the lab's event stream: {exc}") from None
        finally:
            conn.close()

    @staticmethod
    def _remaining(deadline: float | None) -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return None


def _error_of(status: int, raw: bytes) -> str:
    """The lab's one-line reason for refusing a request."""
    payload = _json_or_none(raw)
    message = payload.get("error") if isinstance(payload, dict) else None
    return str(message or f"lab answered HTTP {status}")
