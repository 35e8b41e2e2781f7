"""What the ``python -m <component>`` command lines share."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import click
from pydantic import BaseModel, ValidationError

from emulator.component import ComponentContext, run_component
from emulator.validation import ConfigError, describe, parse_json_config

M = TypeVar("M", bound=BaseModel)

control_option = click.option(
    "--control",
    type=click.Choice(["stdio", "none"]),
    default="none",
    show_default=True,
    help="stdio: read control requests on stdin and stop when it closes (what the lab "
    "supervisor uses); none: stop only on SIGINT/SIGTERM.",
)

config_json_option = click.option(
    "--config-json",
    metavar="JSON",
    help="The whole component configuration as JSON (what the lab supervisor passes).",
)


def build_config(model: type[M], config_json: str | None, fields: dict[str, object]) -> M:
    """From --config-json, or else from the individual flags; a bad value exits with one line."""
    try:
        if config_json is not None:
            return parse_json_config(model, config_json)
        try:
            return model.model_validate({k: v for k, v in fields.items() if v is not None})
        except ValidationError as exc:
            raise ConfigError(describe(exc, "options")) from None
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def run(
    name: str,
    serve: Callable[[ComponentContext], Awaitable[None]],
    control: str,
) -> NoReturn:
    sys.exit(run_component(name, serve, control=control == "stdio"))
