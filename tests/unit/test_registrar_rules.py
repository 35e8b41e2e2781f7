"""The registrar core's rules beyond RFC 3261 §10.3, each with a fake clock and seeded
randomness: Via received/rport and response routing, refresh strategies, digest
authentication, lockout, capacity and RFC 5626 outbound flows."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime

import pytest

from emulator.events import EventList
from emulator.sip import digest
from emulator.sip.message import (
    Headers,
    Request,
    Response,
    new_branch,
    parse_message,
    parse_name_addr,
    parse_via,
)
from emulator.sip.transport import Flow
from registrar.config import RegistrarConfig
from registrar.core import RegistrarCore

PEER = ("127.0.0.11", 5060)
TCP = Flow("tcp", PEER, ("127.0.0.101", 40000))
UDP = Flow("udp", PEER, ("127.0.0.101", 40000))
INSTANCE = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
WALL = 1_700_000_000.0
AUTH = {"users": {"1001": "secret"}, "groups": [{"users": "2[0-9]{3}", "password": "pw-{user}"}]}


def core(seed: int = 7, **overrides: object) -> tuple[RegistrarCore, EventList]:
    config = RegistrarConfig.model_validate(
        {"name": "exp1", "address": "127.0.0.11", "domains": ["uctest.local"], **overrides}
    )
    events = EventList()
    registrar = RegistrarCore(config, events, wall_clock=lambda: WALL, rng=random.Random(seed))
    return registrar, events


def register(
    aor: str = "1001@uctest.local",
    contact: str | None = "<sip:1001@127.0.0.101:40000;transport=tcp>",
    expires: int | None = 3600,
    cseq: int = 1,
    call_id: str = "call-1",
    via: str = "SIP/2.0/TCP 127.0.0.101:40000",
    extra: tuple[tuple[str, str], ...] = (),
) -> Request:
    headers = [
        ("Via", f"{via};branch={new_branch()}"),
        ("From", f"<sip:{aor}>;tag=abc"),
        ("To", f"<sip:{aor}>"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} REGISTER"),
        ("Max-Forwards", "70"),
    ]
    if contact is not None:
        headers.append(("Contact", contact))
    if expires is not None:
        headers.append(("Expires", str(expires)))
    headers.extend(extra)
    return Request("REGISTER", "sip:uctest.local", Headers(headers))


def send(
    registrar: RegistrarCore, request: Request, now: float, flow: Flow = TCP
) -> tuple[Flow, Response]:
    registrar.receive(request, flow, now)
    (out,) = registrar.pop_outgoing()
    response = parse_message(out[1])
    assert isinstance(response, Response)
    return out[0], response


def answer(registrar: RegistrarCore, request: Request, now: float, flow: Flow = TCP) -> Response:
    return send(registrar, request, now, flow)[1]


def granted(response: Response) -> list[int]:
    return [
        int(parse_name_addr(c).params["expires"] or 0) for c in response.headers.get_all("Contact")
    ]


# -- Via received / rport, and where responses go -----------------------------------------


def test_rport_is_filled_and_received_added_and_the_answer_goes_to_the_source_port() -> None:
    registrar, _ = core()
    request = register(via="SIP/2.0/UDP 127.0.0.101:5060;rport")
    source = Flow("udp", PEER, ("127.0.0.101", 42161))
    flow, response = send(registrar, request, 0.0, source)
    top = parse_via(response.headers.get_all("Via")[0])
    assert top.params["rport"] == "42161"
    assert top.params["received"] == "127.0.0.101"  # RFC 3581 §4: always, with rport
    assert flow == source


def test_received_when_sent_by_differs_and_udp_answer_goes_to_the_sent_by_port() -> None:
    registrar, _ = core()
    request = register(via="SIP/2.0/UDP client.example:5080")
    flow, response = send(registrar, request, 0.0, Flow("udp", PEER, ("127.0.0.101", 40000)))
    top = parse_via(response.headers.get_all("Via")[0])
    assert top.params["received"] == "127.0.0.101"
    assert "rport" not in top.params
    # RFC 3261 §18.2.2: the received address, at the sent-by port.
    assert flow == Flow("udp", PEER, ("127.0.0.101", 5080))
    # No port in sent-by: 5060.
    flow, _ = send(registrar, register(via="SIP/2.0/UDP client.example", cseq=2), 1.0, UDP)
    assert flow == Flow("udp", PEER, ("127.0.0.101", 5060))


def test_via_unchanged_when_sent_by_is_the_source_and_no_rport() -> None:
    registrar, _ = core()
    request = register(via="SIP/2.0/TCP 127.0.0.101:40000")
    flow, response = send(registrar, request, 0.0)
    assert response.headers.get_all("Via") == request.headers.get_all("Via")
    assert flow == TCP  # over a connection the answer goes back on it


def test_options_get_received_and_rport_too() -> None:
    registrar, _ = core()
    options = register(via="SIP/2.0/UDP 10.0.0.1:5060;rport")
    options.method = "OPTIONS"
    options.headers.set("CSeq", "1 OPTIONS")
    flow, response = send(registrar, options, 0.0, UDP)
    assert response.status == 200
    top = parse_via(response.headers.get("Via") or "")
    assert (top.params["rport"], top.params["received"]) == ("40000", "127.0.0.101")
    assert "outbound" in (response.headers.get("Supported") or "")
    assert flow == UDP


def test_only_the_top_via_is_stamped() -> None:
    registrar, _ = core()
    request = register(via="SIP/2.0/UDP 10.0.0.1:5060;rport")
    request.headers.add("Via", "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKother")
    _, response = send(registrar, request, 0.0, UDP)
    vias = response.headers.get_all("Via")
    assert len(vias) == 2
    assert "received" in vias[0]
    assert vias[1] == "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKother"


# -- refresh strategies, clock and randomness ------------------------------------------------


def test_maximum_grants_the_lesser_of_requested_and_max() -> None:
    registrar, _ = core(max_expires=3600, min_expires=60)
    assert granted(answer(registrar, register(expires=600), 0.0)) == [600]
    assert granted(answer(registrar, register(expires=7200, cseq=2), 1.0)) == [3600]


def test_variable_is_random_between_min_and_the_lesser_and_repeatable_with_a_seed() -> None:
    def run(seed: int) -> list[int]:
        registrar, _ = core(seed=seed, refresh="variable", min_expires=60, max_expires=600)
        values = []
        for cseq in range(1, 40):
            values += granted(answer(registrar, register(expires=300, cseq=cseq), float(cseq)))
        return values

    values = run(1)
    assert all(60 <= v <= 300 for v in values)
    assert len(set(values)) > 5  # random, not a constant
    assert run(1) == values  # seeded: the same run again
    assert run(2) != values


def test_variable_expiry_drives_the_timer() -> None:
    registrar, events = core(refresh="variable", min_expires=60, max_expires=600)
    (expires,) = granted(answer(registrar, register(expires=600), 100.0))
    assert registrar.next_timer() == 100.0 + expires
    registrar.handle_timer(100.0 + expires - 1)
    assert len(registrar.bindings) == 1
    registrar.handle_timer(100.0 + expires)
    assert len(registrar.bindings) == 0
    assert events.of("binding.expired")[0]["aor"] == "1001@uctest.local"


def test_date_comes_from_the_injected_wall_clock_and_tags_from_the_rng() -> None:
    first, _ = core(seed=3)
    second, _ = core(seed=3)
    a = answer(first, register(), 0.0)
    b = answer(second, register(), 0.0)
    assert parsedate_to_datetime(a.headers.get("Date") or "").timestamp() == WALL
    assert a.headers.get("To") == b.headers.get("To")
    assert parse_name_addr(a.headers.get("To") or "").tag


# -- digest authentication -------------------------------------------------------------------


def challenge_of(response: Response, algorithm: str = "SHA-256") -> dict[str, str]:
    for value in response.headers.get_all("WWW-Authenticate"):
        _, params = digest.parse_params(value)
        if params["algorithm"] == algorithm:
            return params
    raise AssertionError(f"no {algorithm} challenge in {response.headers}")


def authorized(
    request: Request,
    params: dict[str, str],
    *,
    user: str = "1001",
    password: str = "secret",
    nc: int = 1,
    algorithm: str = "SHA-256",
) -> Request:
    request.headers.add(
        "Authorization",
        digest.authorization(
            username=user,
            realm=params["realm"],
            password=password,
            method="REGISTER",
            uri=request.uri,
            nonce=params["nonce"],
            nc=nc,
            cnonce="c0ffee",
            algorithm=algorithm,
            opaque=params.get("opaque"),
        ),
    )
    return request


def test_challenge_then_success_with_each_algorithm() -> None:
    registrar, events = core(auth=AUTH)
    first = answer(registrar, register(), 0.0)
    assert first.status == 401
    offered = [digest.parse_params(v)[1] for v in first.headers.get_all("WWW-Authenticate")]
    assert [p["algorithm"] for p in offered] == ["SHA-256", "MD5"]  # RFC 8760: preferred first
    assert all(p["qop"] == "auth" and p["realm"] == "uctest.local" for p in offered)
    assert len(registrar.bindings) == 0
    for cseq, algorithm in ((2, "SHA-256"), (3, "MD5")):
        params = challenge_of(first, algorithm)
        ok = answer(
            registrar, authorized(register(cseq=cseq), params, algorithm=algorithm, nc=cseq), 1.0
        )
        assert ok.status == 200, algorithm
    assert len(registrar.bindings) == 1
    assert events.of("auth.failed") == []


def test_group_pattern_credentials() -> None:
    registrar, _ = core(auth=AUTH)
    params = challenge_of(answer(registrar, register(aor="2042@uctest.local"), 0.0))
    request = authorized(
        register(aor="2042@uctest.local", cseq=2), params, user="2042", password="pw-2042"
    )
    assert answer(registrar, request, 1.0).status == 200
    request = authorized(
        register(aor="3042@uctest.local", cseq=3), params, user="3042", password="pw-3042", nc=2
    )
    assert answer(registrar, request, 1.0).status == 401  # no credentials for 3042


def test_wrong_password_is_challenged_again_and_is_an_event() -> None:
    registrar, events = core(auth=AUTH)
    params = challenge_of(answer(registrar, register(), 0.0))
    response = answer(registrar, authorized(register(cseq=2), params, password="guess"), 1.0)
    assert response.status == 401
    assert "stale" not in challenge_of(response)
    assert len(registrar.bindings) == 0
    (failed,) = events.of("auth.failed")
    assert failed["reason"] == "wrong password"
    assert failed["source"] == "127.0.0.101"


def test_expired_nonce_gets_stale_true_and_the_new_nonce_works() -> None:
    registrar, events = core(auth={**AUTH, "nonce_lifetime": 30})
    params = challenge_of(answer(registrar, register(), 0.0))
    stale = answer(registrar, authorized(register(cseq=2), params), 30.0)
    assert stale.status == 401
    fresh = challenge_of(stale)
    assert fresh["stale"] == "true"
    assert fresh["nonce"] != params["nonce"]
    assert answer(registrar, authorized(register(cseq=3), fresh), 31.0).status == 200
    assert events.of("auth.failed") == []  # stale is not a failure


def test_unknown_nonce_with_right_password_is_stale_not_a_failure() -> None:
    registrar, events = core(auth=AUTH)
    params = {"realm": "uctest.local", "nonce": "from-another-peer"}
    response = answer(registrar, authorized(register(), params), 0.0)
    assert challenge_of(response)["stale"] == "true"
    assert events.of("auth.failed") == []


def test_replayed_nonce_count_is_refused() -> None:
    registrar, events = core(auth=AUTH)
    params = challenge_of(answer(registrar, register(), 0.0))
    assert answer(registrar, authorized(register(cseq=2), params, nc=1), 1.0).status == 200
    # The same credentials again (a captured REGISTER replayed with a new branch).
    replay = answer(registrar, authorized(register(cseq=3), params, nc=1), 2.0)
    assert replay.status == 401
    assert events.of("auth.failed")[0]["reason"] == "nonce-count replayed"
    # A higher nonce-count on the same nonce is the client's next request: fine.
    assert answer(registrar, authorized(register(cseq=4), params, nc=2), 3.0).status == 200


def test_another_users_aor_gets_403() -> None:
    registrar, events = core(auth=AUTH)
    params = challenge_of(answer(registrar, register(aor="2042@uctest.local"), 0.0))
    request = authorized(register(aor="2042@uctest.local", cseq=2), params)  # as 1001
    response = answer(registrar, request, 1.0)
    assert response.status == 403
    assert len(registrar.bindings) == 0
    assert "may not register 2042@uctest.local" in events.of("auth.failed")[0]["reason"]


def test_repeated_failures_lock_the_source_out_then_let_it_back() -> None:
    registrar, events = core(
        auth={**AUTH, "lockout_failures": 3, "lockout_window": 60, "lockout_time": 300}
    )
    params = challenge_of(answer(registrar, register(), 0.0))
    for n in range(3):
        response = answer(
            registrar,
            authorized(register(cseq=2 + n), params, password=f"guess{n}", nc=n + 1),
            1.0 + n,
        )
        assert response.status == 401
    (locked,) = events.of("auth.lockout")
    assert locked == {"source": "127.0.0.101", "on": True, "failures": 3, "seconds": 300}
    # Even the right password is refused now, without a challenge.
    refused = answer(registrar, authorized(register(cseq=10), params, nc=10), 10.0)
    assert refused.status == 403
    assert refused.headers.get_all("WWW-Authenticate") == []
    other = Flow("tcp", PEER, ("127.0.0.102", 40000))
    assert answer(registrar, register(cseq=11), 11.0, other).status == 401  # others unaffected
    assert registrar.next_timer() == 303.0
    registrar.handle_timer(303.0)
    assert events.of("auth.lockout")[-1] == {"source": "127.0.0.101", "on": False}
    fresh = challenge_of(answer(registrar, register(cseq=12), 304.0))
    assert answer(registrar, authorized(register(cseq=13), fresh), 305.0).status == 200


def test_failures_spread_beyond_the_window_do_not_lock() -> None:
    registrar, events = core(auth={**AUTH, "lockout_failures": 2, "lockout_window": 10})
    params = challenge_of(answer(registrar, register(), 0.0))
    answer(registrar, authorized(register(cseq=2), params, password="x", nc=1), 0.0)
    answer(registrar, authorized(register(cseq=3), params, password="y", nc=2), 20.0)
    assert events.of("auth.lockout") == []


# -- capacity --------------------------------------------------------------------------------


def test_capacity_refuses_new_aors_but_not_refreshes() -> None:
    registrar, events = core(capacity=2)
    for user in ("1001", "1002"):
        assert answer(registrar, register(aor=f"{user}@uctest.local"), 0.0).status == 200
    assert events.of("capacity") == [{"on": True, "registrations": 2, "capacity": 2}]
    refused = answer(registrar, register(aor="1003@uctest.local"), 1.0)
    assert refused.status == 503
    assert refused.reason == "Registration Capacity Reached"
    assert refused.headers.get("Warning") == '399 127.0.0.11 "Capacity of 2 AORs reached"'
    # A refresh, and a second contact for an AOR already here, still succeed.
    assert answer(registrar, register(cseq=2), 2.0).status == 200
    second = register(cseq=3, contact="<sip:1001@127.0.0.150:5060>")
    assert answer(registrar, second, 2.0).status == 200
    # One leaves: room again, and the event says so.
    answer(registrar, register(cseq=4, contact="*", expires=0), 3.0)
    assert events.of("capacity")[-1] == {"on": False, "registrations": 1, "capacity": 2}
    assert answer(registrar, register(aor="1003@uctest.local"), 4.0).status == 200


# -- RFC 5626 outbound -----------------------------------------------------------------------


def outbound(reg_id: int = 1, cseq: int = 1, port: int = 40000, expires: int = 3600) -> Request:
    return register(
        cseq=cseq,
        expires=expires,
        contact=f"<sip:1001@127.0.0.101:{port};transport=tcp;ob>;+sip.instance={INSTANCE};reg-id={reg_id}",
        via=f"SIP/2.0/TCP 127.0.0.101:{port}",
        extra=(("Supported", "path, outbound"),),
    )


def test_outbound_binding_answers_require_and_flow_timer() -> None:
    registrar, events = core(flow_timer=90)
    response = answer(registrar, outbound(), 0.0)
    assert response.status == 200
    assert response.headers.get("Require") == "outbound"
    assert response.headers.get("Flow-Timer") == "90"
    (contact,) = response.headers.get_all("Contact")
    params = parse_name_addr(contact).params
    assert params["reg-id"] == "1"
    assert params["+sip.instance"] == INSTANCE
    (added,) = events.of("binding.added")
    assert added["reg_id"] == 1
    assert added["flow"] == str(TCP)


def test_one_binding_per_flow_a_new_flow_replaces_it() -> None:
    registrar, _ = core()
    answer(registrar, outbound(reg_id=1), 0.0)
    second = Flow("tcp", PEER, ("127.0.0.101", 40002))
    answer(registrar, outbound(reg_id=2, port=40002, cseq=2), 0.0, second)
    assert len(registrar.bindings) == 2  # two flows (reg-id 1 and 2) of one instance
    # Flow 1 comes back on a new connection: it replaces its binding, it does not add one.
    third = Flow("tcp", PEER, ("127.0.0.101", 40004))
    answer(registrar, outbound(reg_id=1, port=40004, cseq=3), 1.0, third)
    assert len(registrar.bindings) == 2
    flows = sorted(b.flow.remote[1] for b in registrar.bindings.all())
    assert flows == [40002, 40004]
    # The old connection closing now ends nothing.
    registrar.flow_closed(TCP, 2.0)
    assert len(registrar.bindings) == 2


def test_a_closed_flow_ends_its_outbound_binding_at_once() -> None:
    registrar, events = core()
    answer(registrar, outbound(), 0.0)
    answer(registrar, register(aor="1002@uctest.local"), 0.0)  # not outbound: kept to expiry
    registrar.flow_closed(TCP, 5.0)
    assert [b.aor for b in registrar.bindings.all()] == ["1002@uctest.local"]
    (removed,) = events.of("binding.removed")
    assert removed["reason"] == "flow closed"
    assert removed["aor"] == "1001@uctest.local"


def test_reg_id_without_supported_outbound_is_an_ordinary_binding() -> None:
    registrar, _ = core()
    request = outbound()
    request.headers.remove("Supported")
    response = answer(registrar, request, 0.0)
    assert response.status == 200
    assert "Require" not in response.headers
    assert not registrar.bindings.all()[0].outbound


def test_outbound_errors() -> None:
    registrar, _ = core()
    no_instance = register(
        contact="<sip:1001@127.0.0.101:40000>;reg-id=1", extra=(("Supported", "outbound"),)
    )
    assert answer(registrar, no_instance, 0.0).status == 400
    proxied = outbound()
    proxied.headers.add("Via", "SIP/2.0/TCP 10.1.1.1:5060;branch=z9hG4bKproxy")
    assert answer(registrar, proxied, 0.0).status == 439
    two = outbound()
    two.headers.add("Contact", f"<sip:1001@127.0.0.101:40001>;+sip.instance={INSTANCE};reg-id=2")
    assert answer(registrar, two, 0.0).status == 400
    assert len(registrar.bindings) == 0


def test_outbound_unregister_by_instance_and_reg_id() -> None:
    registrar, events = core()
    answer(registrar, outbound(), 0.0)
    assert answer(registrar, outbound(cseq=2, expires=0), 1.0).status == 200
    assert len(registrar.bindings) == 0
    assert events.of("binding.removed")[0]["reason"] == "unregistered"


def test_status_lists_bindings_with_their_flows() -> None:
    registrar, _ = core(capacity=10)
    answer(registrar, outbound(), 0.0)
    status = registrar.status(10.0)
    (binding,) = status["bindings"]  # type: ignore[misc]
    assert binding["flow"] == "tcp 127.0.0.11:5060->127.0.0.101:40000"
    assert binding["reg_id"] == 1
    assert binding["expires"] == 50
    assert status["capacity"] == 10


@pytest.mark.parametrize("reg_id", ["0", "x", "99999999999"])
def test_bad_reg_id_is_400(reg_id: str) -> None:
    registrar, _ = core()
    request = register(
        contact=f"<sip:1001@127.0.0.101:40000>;+sip.instance={INSTANCE};reg-id={reg_id}",
        extra=(("Supported", "outbound"),),
    )
    assert answer(registrar, request, 0.0).status == 400
