"""What the ``python -m <component>`` command lines share."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import click
from pydantic import BaseModel, ValidationError

from emulator import compiled
from emulator.channel import ChannelSpec, ChannelSpecError
from emulator.component import ComponentContext, run_component
from emulator.validation import ConfigError, describe, parse_json_config

M = TypeVar("M", bound=BaseModel)


class _ChannelParam(click.ParamType):
    name = "stdio|none|listen:HOST:PORT|connect:HOST:PORT"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):  # type: ignore[no-untyped-def]
        if isinstance(value, ChannelSpec):
            return value
        try:
            return ChannelSpec.parse(str(value))
        except ChannelSpecError as exc:
            self.fail(str(exc), param, ctx)


control_option = click.option(
    "--control",
    type=_ChannelParam(),
    default="none",
    show_default=True,
    help="stdio: read control requests on stdin and stop when it closes (what the lab "
    "supervisor uses); listen:HOST:PORT: serve events and control on a TCP address for a lab "
    "that attaches (a container, another host; beyond loopback set SIPLAB_CONTROL_TOKEN); "
    "connect:HOST:PORT: join the lab's collector there (replicas the lab cannot list); "
    "none: standalone, stop only on SIGINT/SIGTERM.",
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
    control: ChannelSpec,
) -> NoReturn:
    stale = compiled.stale()
    if stale:
        print(f"{name}: warning: {compiled.stale_message(stale)}", file=sys.stderr)
    sys.exit(run_component(name, serve, control=control))
