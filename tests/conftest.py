"""Shared fixtures.

``make_lab`` builds on the ``siplab_lab`` fixture that siplab offers its users: the lab is
stopped with ``siplab down`` after the test, and the test errors if any process it started is
still alive or anything still listens on its addresses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from emulator.pytest_plugin import LabFactory
from emulator.testing import RunningLab
from tests.labs import fresh_lab_dict


@pytest.fixture
def make_lab(siplab_lab: LabFactory) -> Callable[..., RunningLab]:
    """``make_lab(endpoints=..., registrar=...)`` starts a lab on a fresh /24 and returns it."""

    def start(*, require_registered: bool = True, **overrides: Any) -> RunningLab:
        return siplab_lab(fresh_lab_dict(**overrides), require_registered=require_registered)

    return start
