"""The lab model: the seed's default lab, lab files, and what each component is told."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsserver.authority import Authority
from emulator.lab.model import default_lab, load_lab
from emulator.lab.ops import seen_line, timeout_message
from emulator.validation import ConfigError
from tests.dnshelpers import ask, texts


def write(tmp_path: Path, text: str, name: str = "lab.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_default_lab_is_the_seed() -> None:
    lab = default_lab()
    assert lab.component_names() == ["dns", "exp1", "exp2", "1001@uctest.local"]
    assert lab.dns_address() == "127.0.0.10:1053"
    endpoint = lab.endpoint_config("1001@uctest.local")
    assert (endpoint.proxy, endpoint.transport, str(endpoint.address)) == (
        "uctest.local",
        "tcp",
        "127.0.0.101",
    )
    assert endpoint.dns == ["127.0.0.10:1053"]
    peer = lab.registrar_config("exp1")
    assert (str(peer.address), peer.tcp_port, peer.tls_port, peer.max_expires) == (
        "127.0.0.11",
        5060,
        5061,
        60,
    )
    authority = Authority(lab.dns_config().zones)
    srv, _ = ask(authority, "_sip._tcp.uctest.local", "SRV")
    assert sorted(texts(srv)) == [
        "_sip._tcp.uctest.local. SRV 10 10 5060 exp1.uctest.local.",
        "_sip._tcp.uctest.local. SRV 10 10 5060 exp2.uctest.local.",
    ]
    sips, _ = ask(authority, "_sips._tcp.uctest.local", "SRV")
    assert {t.split()[-2] for t in texts(sips)} == {"5061"}
    cluster, _ = ask(authority, "habibexpc-cluster.uctest.local", "A")
    assert sorted(texts(cluster)) == [
        "habibexpc-cluster.uctest.local. A 127.0.0.11",
        "habibexpc-cluster.uctest.local. A 127.0.0.12",
    ]


def test_example_output_loads_back(tmp_path: Path) -> None:
    lab = load_lab(write(tmp_path, default_lab().to_yaml()))
    assert lab == default_lab()


def test_endpoints_get_addresses_and_names(tmp_path: Path) -> None:
    lab = load_lab(
        write(
            tmp_path,
            "peers: [{name: p1, address: 127.0.9.11}]\n"
            "endpoint_base_address: 127.0.9.200\n"
            "endpoints: [{uri: 1001@uctest.local},"
            " {uri: 1002@uctest.local, proxy: p1.uctest.local}]\n",
        )
    )
    assert lab.endpoint_names() == ["1001@uctest.local", "1002@uctest.local"]
    assert str(lab.endpoint_config("1002@uctest.local").address) == "127.0.9.201"
    assert lab.endpoint_config("1002@uctest.local").proxy == "p1.uctest.local"


def test_zone_file_next_to_the_lab_file_and_extra_zones(tmp_path: Path) -> None:
    (tmp_path / "zones").mkdir()
    write(
        tmp_path / "zones",
        "$ORIGIN uctest.local.\n$TTL 30\n_sip._tcp SRV 10 10 5060 exp1\nexp1 A 127.0.9.11\n",
        "uctest.local.zone",
    )
    write(tmp_path / "zones", "$TTL 30\nhost A 127.0.9.50\n", "other.test.zone")
    lab = load_lab(
        write(
            tmp_path,
            "peers: [{name: exp1, address: 127.0.9.11}]\n"
            "dns: {zone_file: zones/uctest.local.zone, "
            "zones: [{origin: other.test, file: zones/other.test.zone}]}\n",
        )
    )
    authority = Authority(lab.dns_config().zones)
    srv, _ = ask(authority, "_sip._tcp.uctest.local", "SRV")
    assert texts(srv) == ["_sip._tcp.uctest.local. SRV 10 10 5060 exp1.uctest.local."]
    # The file is the zone: no generated seed records beside it.
    cluster, _ = ask(authority, "habibexpc-cluster.uctest.local", "A")
    assert texts(cluster) == []
    other, _ = ask(authority, "host.other.test", "A")
    assert texts(other) == ["host.other.test. A 127.0.9.50"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("peers: [{name: dns, address: 127.0.9.1}]\n", "'dns' is used twice (or is reserved)"),
        (
            "peers: [{name: a, address: 127.0.9.1}, {name: b, address: 127.0.9.1}]\n",
            "two peers share an address",
        ),
        (
            "peers: [{name: a, address: 127.0.9.1}]\nregistrar: {min_expires: 90}\n",
            "min_expires (90) is above",
        ),
        (
            "peers: [{name: a, address: 127.0.9.1}]\nendpoints: [{uri: 1@d, proxy: 'bad proxy'}]\n",
            "endpoints[0]",
        ),
        (
            "peers: [{name: a, address: 127.0.9.1}]\ndns: {zone_file: missing.zone}\n",
            "missing.zone",
        ),
        (
            "peers: [{name: a, address: 127.0.9.1}]\n"
            "dns: {tsig: {name: k, secret: 'not base64!'}}\n",
            "base64",
        ),
    ],
)
def test_bad_lab_files_get_one_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_lab(write(tmp_path, text))
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read lab file"):
        load_lab(tmp_path / "nope.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_lab(tmp_path / "bin.yaml")
    with pytest.raises(ConfigError, match=r"lab.yaml:3:1: not valid YAML"):
        load_lab(write(tmp_path, "peers:\n  - [\n"))


yaml_ish = st.text(
    alphabet=st.sampled_from(list("peers:[]{}-, \n\tnameaddrsdomain127.0.1uri@x:'\"#&*!|>%")),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(text=yaml_ish)
def test_any_lab_text_loads_or_fails_with_one_line(tmp_path_factory: Any, text: str) -> None:
    path = tmp_path_factory.mktemp("lab") / "lab.yaml"
    path.write_text(text)
    try:
        load_lab(path)
    except ConfigError as exc:
        message = str(exc)
    else:
        return
    assert "\n" not in message


def test_default_zone_holds_every_srv_name_of_the_seed_guide() -> None:
    authority = Authority(default_lab().dns_config().zones)
    expected = {
        "_sips._tcp": "5061",
        "_sip._tcp": "5060",
        "_sip._udp": "5060",
        "_h323ls._udp": "1719",
        "_h323cs._tcp": "1720",
        "_h323rs._udp": "1719",
    }
    for name, port in expected.items():
        answer, _ = ask(authority, f"{name}.uctest.local", "SRV")
        targets = sorted(t.split()[-1] for t in texts(answer))
        assert targets == ["exp1.uctest.local.", "exp2.uctest.local."], name
        assert {t.split()[-2] for t in texts(answer)} == {port}, name


def test_example_names_the_endpoint_proxy() -> None:
    assert "proxy: uctest.local" in default_lab().to_yaml()


PEERS = "peers: [{name: a, address: 127.0.9.1}]\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            PEERS + "registrar: {min_expires: 1, max_expires: 10, default_expires: 60}\n",
            "default_expires (60) must lie between min_expires (1) and max_expires (10)",
        ),
        (
            "peers: [{name: a, address: 127.0.9.1}]\ndns: {address: 127.0.9.1, port: 5060}\n",
            "dns listens on 127.0.9.1 port 5060, which peers[0] (a) uses too",
        ),
        ("peers: [{name: a, address: 10.1.2.3}]\n", "peers[0].address: 10.1.2.3 is not a loopback"),
        (PEERS + "dns: {address: 192.0.2.53}\n", "dns.address: 192.0.2.53 is not a loopback"),
        (
            PEERS + "endpoints: [{uri: 1@uctest.local, address: 192.0.2.9}]\n",
            "endpoints[0].address: 192.0.2.9 is not a loopback",
        ),
        (
            "peers: [{name: a, address: 127.0.9.1, external: true, attach: '127.0.9.1:7000'}]\n",
            "either external",
        ),
        ("peers: [{name: a, address: 127.0.9.1, attach: 'nowhere'}]\n", "peers[0].attach"),
    ],
)
def test_check_refuses_inconsistent_labs(tmp_path: Path, content: str, expected: str) -> None:
    with pytest.raises(ConfigError) as failure:
        load_lab(write(tmp_path, content))
    assert expected in str(failure.value)
    assert "\n" not in str(failure.value)


def test_external_peers_may_live_anywhere_and_alone(tmp_path: Path) -> None:
    lab = load_lab(
        write(
            tmp_path,
            "peers: [{name: kam1, address: 192.0.2.1, external: true},"
            " {name: kam2, address: 192.0.2.2, external: true}]\n",
        )
    )
    assert lab.component_names() == ["dns", "kam1", "kam2"]
    authority = Authority(lab.dns_config().zones)
    answer, _ = ask(authority, "_sip._tcp.uctest.local", "SRV")
    assert len(texts(answer)) == 2


def test_container_labs_stay_inside_the_benchmarking_range(tmp_path: Path) -> None:
    inside = "network: containers\ndns: {address: 198.18.0.10}\n"
    lab = load_lab(write(tmp_path, inside + "peers: [{name: a, address: 198.18.0.11}]\n"))
    assert lab.network == "containers"
    with pytest.raises(ConfigError, match=r"outside 198\.18\.0\.0/15"):
        load_lab(write(tmp_path, inside + "peers: [{name: a, address: 172.17.0.2}]\n"))


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {"kind": "process.paused", "pid": 7, "by": "outside"},
            "process 7 paused (not by the lab)",
        ),
        ({"kind": "process.resumed", "pid": 7, "by": "lab"}, "process 7 resumed"),
        ({"kind": "component.unresponsive", "on": True}, "not answering the lab"),
        ({"kind": "link.changed", "partition": {"remotes": None}, "impair": None}, "partitioned"),
        (
            {"kind": "fault.applied", "fault": "dns.servfail", "name": "exp1.uctest.local."},
            "fault: dns.servfail (for exp1.uctest.local.)",
        ),
        (
            {"kind": "fault.applied", "fault": "kill", "target": "exp1", "pid": 9},
            "kill exp1 (pid 9)",
        ),
    ],
)
def test_human_lines_name_what_happened(event: dict[str, Any], expected: str) -> None:
    from emulator.lab.render import human_lines

    (line,) = human_lines({"t": 0.0, "component": "exp1", **event})
    assert expected in line
    assert "None" not in line


def test_a_wait_that_times_out_shows_stderr_lines_and_states() -> None:
    """A test that waited in vain shows why: a component's traceback line and the state an
    endpoint reached, not only the kinds of the events seen."""
    seen = [
        seen_line({"component": "1001@uctest.local", "kind": "component.stderr", "line": "boom"}),
        seen_line({"component": "1001@uctest.local", "kind": "registration.state", "state": "x"}),
        seen_line({"component": "exp1", "kind": "process.exited", "status": 0}),
    ]
    message = timeout_message("backoff", 10, seen)
    assert message.splitlines() == [
        "no backoff within 10 s; last events:",
        "  1001@uctest.local component.stderr: boom",
        "  1001@uctest.local registration.state: x",
        "  exp1 process.exited",
    ]
