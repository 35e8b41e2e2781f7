"""Turning pydantic validation errors into the one line a user reads."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """Invalid configuration; ``str()`` is one line naming the field and the problem."""


def describe(exc: ValidationError, source: str) -> str:
    """``lab.yaml: peers[1].address: value is not a valid IPv4 address (got '127.0.0.300')``."""
    first = exc.errors()[0]
    path = ""
    for part in first["loc"]:
        if isinstance(part, str) and ("[" in part or part.startswith("function-")):
            continue  # pydantic's name for a union member, not a field the user wrote
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    message = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    detail = (
        f" (got {got!r})"
        if isinstance(got, str | int | float) and first["type"] != "missing"
        else ""
    )
    more = len(exc.errors()) - 1
    tail = f"; and {more} more problem{'s' if more > 1 else ''}" if more else ""
    where = f"{source}: {path}: " if path else f"{source}: "
    return f"{where}{message}{detail}{tail}"


def parse_json_config(model: type[M], text: str, source: str = "--config-json") -> M:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, source)) from None
