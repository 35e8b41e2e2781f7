"""``python -m dnsserver``: one authoritative DNS server process.

Either ``--config-json`` (a whole ``DnsServerConfig``; what the lab supervisor passes) or the
standalone flags ``--zone-origin/--record/--zone/--listen``. Bad input gives one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from pydantic import ValidationError

from dnsserver.config import DnsServerConfig, RecordConfig
from dnsserver.rdata import BadRecord, parse_ttl, tokenize
from dnsserver.server import run_server
from emulator.channel import ChannelSpec
from emulator.component import ComponentContext, run_component
from emulator.component_cli import config_json_option, control_option
from emulator.validation import ConfigError, describe, parse_json_config

USAGE_ERROR = 2


def parse_record_flag(text: str) -> RecordConfig:
    """``--record "NAME [TTL] TYPE DATA..."``, e.g. ``"_sip._tcp SRV 10 10 5060 exp1"``."""
    tokens = text.split(None, 3)
    if len(tokens) < 3:
        raise click.BadParameter(
            f"{text!r}: expected 'NAME [TTL] TYPE DATA'", param_hint="--record"
        )
    name, rest = tokens[0], text.split(None, 1)[1]
    ttl: int | None = None
    head, _, rest_after = rest.partition(" ")
    if head[:1].isdigit():
        try:
            ttl = parse_ttl(head)
        except BadRecord as exc:
            raise click.BadParameter(str(exc), param_hint="--record") from None
        rest = rest_after.strip()
    rtype, _, data = rest.partition(" ")
    try:
        return RecordConfig.model_validate(
            {"name": name, "type": rtype, "ttl": ttl, "data": data.strip()}
        )
    except ValidationError as exc:
        raise ConfigError(describe(exc, f"--record {text!r}")) from None


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"{text!r}: expected ADDRESS:PORT", param_hint="--listen")
    return host.strip("[]"), int(port)


def build_config(
    config_json: str | None,
    name: str | None,
    zone_origin: str | None,
    records: tuple[str, ...],
    zone_files: tuple[Path, ...],
    listen: str | None,
    ttl: int,
) -> DnsServerConfig:
    if config_json is not None:
        if zone_origin or records or zone_files or listen:
            raise click.UsageError("--config-json cannot be combined with zone or listen flags")
        config = parse_json_config(DnsServerConfig, config_json)
        return config.model_copy(update={"name": name}) if name else config
    if listen is None:
        raise click.UsageError("give --config-json, or --listen with --zone-origin or --zone")
    host, port = parse_listen(listen)
    zones: list[dict[str, object]] = []
    if zone_origin is not None:
        zones.append(
            {
                "origin": zone_origin,
                "ttl": ttl,
                "records": [parse_record_flag(text).model_dump() for text in records],
            }
        )
    elif records:
        raise click.UsageError("--record needs --zone-origin")
    for path in zone_files:
        zones.append({"origin": _origin_of(path), "ttl": ttl, "file": str(path)})
    if not zones:
        raise click.UsageError("no zone: give --zone-origin or --zone FILE")
    try:
        return DnsServerConfig.model_validate(
            {"name": name or "dns", "address": host, "port": port, "zones": zones}
        )
    except ValidationError as exc:
        raise ConfigError(describe(exc, "options")) from None


def _origin_of(path: Path) -> str:
    """The zone origin of a master file: its first ``$ORIGIN``, else the file name
    ("uctest.local.zone" -> "uctest.local")."""
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                tokens = tokenize(line.split(";", 1)[0])
                if len(tokens) == 2 and tokens[0].upper() == "$ORIGIN":
                    return tokens[1]
    except (OSError, UnicodeDecodeError, BadRecord) as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--zone") from None
    return path.name.removesuffix(".zone").removesuffix(".db")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@config_json_option
@click.option("--name", help="Component name used in events (default: dns).")
@click.option("--zone-origin", help="Origin of the zone given with --record (e.g. uctest.local).")
@click.option(
    "--record",
    "records",
    multiple=True,
    help="'NAME [TTL] TYPE DATA', relative to --zone-origin; repeatable.",
)
@click.option(
    "--zone",
    "zone_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="RFC 1035 master file; origin from its $ORIGIN or file name; repeatable.",
)
@click.option("--listen", help="ADDRESS:PORT for UDP and TCP, e.g. 127.0.0.10:1053.")
@click.option("--ttl", default=60, show_default=True, help="Default TTL of standalone zones.")
@click.option(
    "--events",
    type=click.Choice(["auto", "all", "sample", "off"]),
    help="dns.query events: every one while few, sampled under load (auto, the default); "
    "every query; one per --event-sample; or none.",
)
@click.option("--event-sample", type=click.IntRange(min=1), help="N for --events sample (100).")
@click.option("--metrics", metavar="ADDR:PORT", help="Serve Prometheus /metrics here.")
@control_option
def cli(
    config_json: str | None,
    name: str | None,
    zone_origin: str | None,
    records: tuple[str, ...],
    zone_files: tuple[Path, ...],
    listen: str | None,
    ttl: int,
    events: str | None,
    event_sample: int | None,
    metrics: str | None,
    control: ChannelSpec,
) -> int:
    """Authoritative DNS server for the siplab zones (SRV, round-robin A, ...)."""
    config = build_config(config_json, name, zone_origin, records, zone_files, listen, ttl)
    flags = {"events": events, "event_sample": event_sample, "metrics": metrics}
    if any(value is not None for value in flags.values()):
        update = {key: value for key, value in flags.items() if value is not None}
        try:
            config = DnsServerConfig.model_validate(config.model_dump() | update)
        except ValidationError as exc:
            raise ConfigError(describe(exc, "options")) from None

    async def main(ctx: ComponentContext) -> None:
        await run_server(ctx, config)

    return run_component(config.name, main, control=control)


def main(argv: list[str] | None = None) -> int:
    try:
        return cli.main(argv, prog_name="dnsserver", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        print(exc.format_message(), file=sys.stderr)
        return USAGE_ERROR
    except click.ClickException as exc:
        print(f"dnsserver: {exc.format_message()}", file=sys.stderr)
        return USAGE_ERROR
    except ConfigError as exc:
        print(f"dnsserver: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except click.Abort:
        return 1


if __name__ == "__main__":
    sys.exit(main())
