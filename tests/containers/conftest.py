"""The container tests run only where ``make compose-test`` set up a Docker engine for them."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "containers: needs a Docker engine ('make compose-test' starts one)"
    )
