"""``python -m endpoint``: an endpoint host, one RoomOS-like SIP endpoint or thousands, each
registering and failing over via DNS."""

from __future__ import annotations

import json
import sys

import click

from emulator.channel import ChannelSpec
from emulator.component import run_component
from emulator.component_cli import build_config, config_json_option, control_option, run
from endpoint.config import EndpointConfig
from endpoint.group import HostConfig
from endpoint.host import serve, serve_from_lab


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@config_json_option
@click.option("--name", help="Name used in events (default: the URI).")
@click.option("--uri", help="AOR, e.g. 1001@uctest.local.")
@click.option("--proxy", help="Proxy address: a domain (SRV), a cluster name (A) or an IP.")
@click.option("--transport", type=click.Choice(["tcp", "udp", "tls", "auto"]), help="Default tcp.")
@click.option("--address", help="The endpoint's own address, e.g. 127.0.0.101.")
@click.option("--dns", "dns", multiple=True, help="DNS server ip:port (repeatable).")
@click.option("--expires", type=int, help="Expiry to ask for (default 3600).")
@control_option
@click.option(
    "--config-from-lab",
    is_flag=True,
    help="Take the host's configuration from the lab it joins (--control connect:HOST:PORT): "
    "a replica of a scalable group gets its slice of the group. --name names the group.",
)
def main(
    config_json: str | None,
    name: str | None,
    uri: str | None,
    proxy: str | None,
    transport: str | None,
    address: str | None,
    dns: tuple[str, ...],
    expires: int | None,
    control: ChannelSpec,
    config_from_lab: bool,
) -> None:
    """Register endpoints through RFC 3263 DNS lookups, and re-register on failure.

    The flags describe one endpoint; --config-json takes a whole host (groups of endpoints
    with URI patterns and address pools: what the lab supervisor passes); --config-from-lab
    waits for it from the lab's collector.
    """
    if config_from_lab:
        if control.mode != "connect":
            raise click.UsageError("--config-from-lab needs --control connect:HOST:PORT")
        if config_json is not None:
            raise click.UsageError("--config-from-lab and --config-json exclude each other")
        sys.exit(run_component(name or "endpoint", serve_from_lab, control=control, from_lab=True))
    if config_json is not None and _is_host(config_json):
        host = build_config(HostConfig, config_json, {})
    elif config_json is not None:  # one endpoint's config, as before hosts
        host = HostConfig.single(build_config(EndpointConfig, config_json, {}))
    else:
        endpoint = build_config(
            EndpointConfig,
            None,
            {
                "name": name or uri,
                "uri": uri,
                "proxy": proxy,
                "transport": transport,
                "address": address,
                "dns": list(dns) or None,
                "expires": expires,
            },
        )
        host = HostConfig.single(endpoint)
    run(host.name, lambda ctx: serve(host, ctx), control)


def _is_host(config_json: str) -> bool:
    """A host's config has groups; anything unreadable is left to HostConfig to explain."""
    try:
        data = json.loads(config_json)
    except ValueError:
        return True
    return not isinstance(data, dict) or "groups" in data


if __name__ == "__main__":
    main()
