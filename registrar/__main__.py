"""``python -m registrar``: one Expressway-like SIP registrar peer (UDP/TCP 5060, TLS 5061)."""

from __future__ import annotations

import click

from emulator.channel import ChannelSpec
from emulator.component_cli import build_config, config_json_option, control_option, run
from registrar.config import RegistrarConfig
from registrar.server import serve


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@config_json_option
@click.option("--name", default="registrar", show_default=True, help="Name used in events.")
@click.option("--address", help="Address to listen on, e.g. 127.0.0.11.")
@click.option("--domain", "domains", multiple=True, help="SIP domain served (repeatable).")
@click.option("--min-expires", type=int, help="Shorter requests get 423 (default 45).")
@click.option("--max-expires", type=int, help="Longest expiry granted (default 60).")
@click.option("--maintenance/--no-maintenance", default=None, help="Start in maintenance mode.")
@click.option("--refresh", type=click.Choice(["maximum", "variable"]), help="Default maximum.")
@click.option("--seed", type=int, help="Seed for variable expiries, tags and nonces.")
@click.option("--capacity", type=int, help="Refuse new AORs past this many.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="Certificate chain (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="Its private key (PEM).")
@click.option("--metrics", metavar="HOST:PORT", help="Serve Prometheus /metrics there.")
@control_option
def main(
    config_json: str | None,
    name: str,
    address: str | None,
    domains: tuple[str, ...],
    min_expires: int | None,
    max_expires: int | None,
    maintenance: bool | None,
    refresh: str | None,
    seed: int | None,
    capacity: int | None,
    tls_cert: str | None,
    tls_key: str | None,
    metrics: str | None,
    control: ChannelSpec,
) -> None:
    """Run one registrar peer: REGISTER bindings per AOR, OPTIONS, maintenance mode.

    Digest credentials and mutual TLS come with --config-json (or a lab file)."""
    config = build_config(
        RegistrarConfig,
        config_json,
        {
            "name": name,
            "address": address,
            "domains": list(domains) or None,
            "min_expires": min_expires,
            "max_expires": max_expires,
            "maintenance": maintenance,
            "refresh": refresh,
            "seed": seed,
            "capacity": capacity,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
            "metrics": metrics,
        },
    )
    run(config.name, lambda ctx: serve(config, ctx), control)


if __name__ == "__main__":
    main()
