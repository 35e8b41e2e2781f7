"""The cluster view's rules, under a fake clock: no sockets, just messages between replicas."""

from __future__ import annotations

from typing import Any

import pytest

from emulator.sip.transport import Flow
from registrar.bindings import Binding
from registrar.cluster import ClusterProtocolError, ClusterView


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, kind: str, /, **fields: Any) -> None:
        self.events.append((kind, fields))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for k, f in self.events if k == kind]


FLOW = Flow("udp", ("127.0.0.11", 5060), ("127.0.0.101", 5070))


def binding(aor: str, expires_at: float, contact: str = "sip:a@127.0.0.101") -> Binding:
    key = ("sip", "a", "127.0.0.101", None, None)
    return Binding(aor, contact, key, expires_at, "call-1", 1, FLOW)


def pair() -> tuple[ClusterView, Sink, ClusterView, Sink]:
    s1, s2 = Sink(), Sink()
    v1, v2 = ClusterView("exp1", s1), ClusterView("exp2", s2)
    return v1, s1, v2, s2


def link(a: ClusterView, b: ClusterView, now: float) -> None:
    """Both sides send hello as the link opens, before either reads the other's."""
    hello_a, hello_b = a.hello(now), b.hello(now)
    b.receive(None, hello_a, now)
    a.receive(None, hello_b, now)


def relay(a: ClusterView, b: ClusterView, now: float, sent: float | None = None) -> None:
    """``a``'s updates, sent at ``sent`` on its clock (default ``now``), arrive at ``b``."""
    for message in a.pop_outgoing(now if sent is None else sent):
        b.receive(a.me, message, now)


def test_add_refresh_remove_reach_the_other_peer() -> None:
    v1, _, v2, s2 = pair()
    link(v1, v2, 0.0)
    assert s2.of("cluster.joined") == [{"peer": "exp1", "bindings": 0}]
    v1.local("a@d", [binding("a@d", 60.0)])
    relay(v1, v2, 0.0)
    assert [(b["peer"], b["expires"]) for b in v2.status(0.0)["bindings"]] == [("exp1", 60)]
    assert v2.bound("a@d") == ["exp1"]
    v1.local("a@d", [binding("a@d", 90.0)])
    relay(v1, v2, 30.0)
    assert v2.status(30.0)["bindings"][0]["expires"] == 60
    v1.local("a@d", [])
    relay(v1, v2, 40.0)
    assert v2.status(40.0)["bindings"] == []


def test_remote_entries_expire_by_their_own_expiry() -> None:
    v1, _, v2, _ = pair()
    link(v1, v2, 0.0)
    v1.local("a@d", [binding("a@d", 60.0)])
    relay(v1, v2, 10.0, sent=0.0)  # arrived 10 s later: 60 s left from the sender's view at 0
    assert v2.next_timer() == 70.0
    v2.handle_timer(69.0)
    assert v2.bound("a@d") == ["exp1"]
    v2.handle_timer(70.0)
    assert v2.bound("a@d") == []


def test_snapshot_on_join_and_double_detection() -> None:
    v1, s1, v2, s2 = pair()
    v1.local("a@d", [binding("a@d", 60.0)])
    v2.local("a@d", [binding("a@d", 50.0)])
    v1.pop_outgoing(0.0), v2.pop_outgoing(0.0)
    assert s1.of("cluster.double") == []
    link(v1, v2, 0.0)
    double = {"aor": "a@d", "on": True, "peers": ["exp1", "exp2"]}
    assert s1.of("cluster.double") == [double]
    assert s2.of("cluster.double") == [double]
    assert v1.doubles() == [{"aor": "a@d", "peers": ["exp1", "exp2"]}]
    v2.local("a@d", [])
    relay(v2, v1, 5.0)
    assert s1.of("cluster.double")[-1] == {"aor": "a@d", "on": False, "peers": ["exp1"]}
    assert v1.doubles() == []


def test_a_peer_that_left_is_not_bound_but_its_entries_are_kept_for_it() -> None:
    v1, s1, v2, _ = pair()
    link(v1, v2, 0.0)
    v2.local("a@d", [binding("a@d", 60.0)])
    relay(v2, v1, 0.0)
    v1.local("a@d", [binding("a@d", 60.0)])
    assert s1.of("cluster.double")[-1]["on"] is True
    v1.peer_down("exp2", "silent")
    assert s1.of("cluster.left") == [{"peer": "exp2", "reason": "silent"}]
    assert s1.of("cluster.double")[-1]["on"] is False
    assert v1.bound("a@d") == ["exp1"]
    assert any(e["peer"] == "exp2" for e in v1.hello(2.0)["entries"])


def test_a_restarted_peer_learns_its_bindings_back_once() -> None:
    v1, _, v2, _ = pair()
    link(v1, v2, 0.0)
    v1.local("a@d", [binding("a@d", 60.0)])
    relay(v1, v2, 0.0)
    v2.peer_down("exp1", "closed")
    reborn = ClusterView("exp1", Sink())  # a new process: new clock origin too
    link(reborn, v2, 20.0)
    restores = reborn.pop_restores()
    assert [(r.aor, r.expires_at) for r in restores] == [("a@d", 60.0)]
    # A later snapshot from the same peer (a link lost and made again) restores nothing.
    link(reborn, v2, 30.0)
    assert reborn.pop_restores() == []


def test_a_binding_whose_client_registered_elsewhere_since_is_not_restored() -> None:
    """exp1 holds a@d and b@d and is killed; a@d's endpoint fails over to exp2. When exp1
    comes back it takes b@d back, but not a@d: that would be a double registration that is
    not one (found with siplab kill/start on the seed lab)."""
    v1, _, v2, s2 = pair()
    link(v1, v2, 0.0)
    v1.local("a@d", [binding("a@d", 60.0)])
    v1.local("b@d", [binding("b@d", 60.0)])
    relay(v1, v2, 0.0)
    v2.peer_down("exp1", "closed")
    v2.local("a@d", [binding("a@d", 70.0, "sip:a@127.0.0.101:41529")])
    sink = Sink()
    reborn = ClusterView("exp1", sink)
    link(reborn, v2, 20.0)
    assert [r.aor for r in reborn.pop_restores()] == ["b@d"]
    assert reborn.bound("a@d") == ["exp2"]
    assert sink.of("cluster.double") == []
    assert s2.of("cluster.double") == []


def test_the_peer_is_the_authority_on_its_own_bindings() -> None:
    v1, _, v2, _ = pair()
    link(v1, v2, 0.0)
    v2.local("a@d", [binding("a@d", 60.0)])
    relay(v2, v1, 0.0)
    v2.local("a@d", [])
    v2.pop_outgoing(1.0)  # the removal is lost with the link
    v1.peer_down("exp2", "silent")
    link(v2, v1, 2.0)  # its new snapshot no longer has the binding
    assert v1.bound("a@d") == []
    assert v1.status(2.0)["bindings"] == []


@pytest.mark.parametrize(
    "message",
    [
        "not an object",
        {"op": "aor", "aor": "a@d", "entries": [{}]},
        {"op": "aor", "aor": "a@d"},
        {"op": "hello"},
        {"op": "hello", "peer": "exp1", "entries": []},  # our own name
        {"op": "hello", "peer": "exp2", "entries": [{"peer": "x", "expires": "nan"}]},
        {"op": "teleport"},
    ],
)
def test_bad_messages_are_protocol_errors(message: object) -> None:
    view = ClusterView("exp1", Sink())
    peer = None if isinstance(message, dict) and message.get("op") == "hello" else "exp2"
    with pytest.raises(ClusterProtocolError):
        view.receive(peer, message, 0.0)


def test_an_entry_from_another_peer_on_this_link_is_refused() -> None:
    v1, _, v2, _ = pair()
    link(v1, v2, 0.0)
    v1.local("a@d", [binding("a@d", 60.0)])
    (message,) = v1.pop_outgoing(0.0)
    with pytest.raises(ClusterProtocolError):
        v2.receive("exp3", message, 0.0)
    message["aor"] = "b@d"  # entries of another AOR than the update names
    with pytest.raises(ClusterProtocolError):
        v2.receive("exp1", message, 0.0)


def test_a_peer_without_a_link_queues_nothing_yet_knows_its_bindings() -> None:
    view = ClusterView("exp1", Sink(), replicate=False)
    for second in range(3):  # one add and two refreshes: nobody would ever take the updates
        view.local("a@d", [binding("a@d", 60.0 + second)])
    assert view.pop_outgoing(3.0) == []
    assert view.bound("a@d") == ["exp1"]
    view.local("a@d", [])
    assert view.bound("a@d") == []


def test_an_update_carries_the_aor_as_it_is_when_sent() -> None:
    v1, _, v2, _ = pair()
    link(v1, v2, 0.0)
    v1.local("a@d", [binding("a@d", 60.0)])
    v1.local("a@d", [binding("a@d", 61.0)])  # refreshed again before the link took the first
    (update,) = v1.pop_outgoing(1.0)
    assert update["op"] == "aor"
    assert [(e["key"], e["expires"]) for e in update["entries"]] == [
        (["sip", "a", "127.0.0.101", None, None], 60.0)
    ]
    v2.receive("exp1", update, 1.0)
    assert v2.bound("a@d") == ["exp1"]
    v1.local("a@d", [])
    (removal,) = v1.pop_outgoing(2.0)
    assert removal == {"op": "aor", "aor": "a@d", "entries": []}
    v2.receive("exp1", removal, 2.0)
    assert v2.bound("a@d") == []
    assert v2.status(2.0)["bindings"] == []
