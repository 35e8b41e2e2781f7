"""The catalogue of event kinds: every kind any component or the lab emits, named once.

Emitters, the status view, the renderers, reports and tests name kinds through :class:`Kind`
rather than spelling strings, so a renamed or misspelt kind is an ``AttributeError`` at import,
not a view that silently stops updating. ``Kind`` is a ``StrEnum``: a member *is* its dotted
string, so events stay plain JSON and ``event["kind"] == Kind.READY`` works on parsed lines.

Each kind also says how often it happens (:class:`Rate`): ``STATE`` kinds (a registration
state, a fault, a process, maintenance, a binding added or removed) are always emitted;
``HIGH`` kinds (a DNS query, a REGISTER answered, a refresh) are always *counted* and may be
sampled or aggregated under load (``stats`` events carry the counts), so that watching a lab
never costs most of its speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum


class Rate(Enum):
    STATE = "state"  # always an event
    HIGH = "high"  # always counted; sampled or aggregated under load


class Kind(StrEnum):
    # -- every component ------------------------------------------------------------
    READY = "ready"
    CONTROL_REPLY = "control.reply"
    COMPONENT_FAILED = "component.failed"
    COMPONENT_STOPPED = "component.stopped"
    COMPONENT_ORPHANED = "component.orphaned"
    EVENTS_DROPPED = "events.dropped"
    STATS = "stats"
    FAULT_APPLIED = "fault.applied"
    # -- the lab (supervisor) ---------------------------------------------------------
    LAB_STARTING = "lab.starting"
    LAB_STARTED = "lab.started"
    LAB_STOPPING = "lab.stopping"
    LAB_STOPPED = "lab.stopped"
    PROCESS_STARTED = "process.started"
    PROCESS_EXITED = "process.exited"
    PROCESS_PAUSED = "process.paused"
    PROCESS_RESUMED = "process.resumed"
    COMPONENT_RESTARTED = "component.restarted"
    COMPONENT_OUTPUT = "component.output"
    COMPONENT_STDERR = "component.stderr"
    COMPONENT_JOINED = "component.joined"
    COMPONENT_LEFT = "component.left"
    COMPONENT_UNRESPONSIVE = "component.unresponsive"
    SCENARIO_RUN = "scenario.run"  # a scripted experiment's run starts or ends
    # -- transports (registrar, endpoint) ----------------------------------------------
    SIP_BAD_MESSAGE = "sip.bad_message"
    TRANSPORT_CLOSED = "transport.closed"
    LINK_CHANGED = "link.changed"  # partition / impairment state of a component's traffic
    # -- DNS server -----------------------------------------------------------------------
    DNS_QUERY = "dns.query"
    DNS_DROPPED = "dns.dropped"
    DNS_CHANGE = "dns.change"
    # -- registrar ------------------------------------------------------------------------
    REGISTER_ANSWERED = "register.answered"
    MAINTENANCE = "maintenance"
    BINDING_ADDED = "binding.added"
    BINDING_REFRESHED = "binding.refreshed"
    BINDING_REMOVED = "binding.removed"
    BINDING_EXPIRED = "binding.expired"
    AUTH_FAILED = "auth.failed"  # a REGISTER with credentials that did not pass
    AUTH_LOCKOUT = "auth.lockout"  # a source locked out (on) or let back in (off)
    CAPACITY = "capacity"  # a peer became full (on) or has room again (off)
    BINDING_RESTORED = "binding.restored"  # learned back from the cluster after a restart
    CLUSTER_JOINED = "cluster.joined"  # a peer link is up (its snapshot applied)
    CLUSTER_LEFT = "cluster.left"  # a peer link went down
    CLUSTER_DOUBLE = "cluster.double"  # an AOR bound on more than one peer (on) or not (off)
    # -- endpoint -------------------------------------------------------------------------
    REGISTRATION_STATE = "registration.state"
    REGISTRATION_REFRESHED = "registration.refreshed"
    REGISTRATION_BACKOFF = "registration.backoff"
    TRANSPORT_LOST = "transport.lost"
    LOCATOR_RESTART = "locator.restart"
    DNS_LOCATED = "dns.located"
    STACK_CONFIGURED = "stack.configured"
    SIP_WARNING = "sip.warning"
    REGISTRATION_FLOW = "registration.flow"  # one RFC 5626 flow's state (Outbound On)
    ENDPOINT_WARNING = "endpoint.warning"
    ENDPOINT_CONFIGURED = "endpoint.configured"


@dataclass(frozen=True, slots=True)
class KindSpec:
    rate: Rate
    fields: tuple[str, ...]
    doc: str


_S, _H = Rate.STATE, Rate.HIGH

CATALOGUE: dict[Kind, KindSpec] = {
    Kind.READY: KindSpec(_S, ("address",), "the component serves; fields say where and what"),
    Kind.CONTROL_REPLY: KindSpec(_S, ("id", "ok"), "answer to a control request (result|error)"),
    Kind.COMPONENT_FAILED: KindSpec(_S, ("error",), "the component could not start"),
    Kind.COMPONENT_STOPPED: KindSpec(_S, ("status",), "the component's last event"),
    Kind.COMPONENT_ORPHANED: KindSpec(_S, ("reason",), "its lab went away; it stops"),
    Kind.EVENTS_DROPPED: KindSpec(_S, ("count",), "events lost to a reader that lagged"),
    Kind.STATS: KindSpec(_S, ("counts",), "per-kind counts of HIGH events since the last one"),
    Kind.FAULT_APPLIED: KindSpec(_S, ("fault", "target"), "a fault was applied or lifted"),
    Kind.LAB_STARTING: KindSpec(_S, ("lab", "components"), "the supervisor starts the lab"),
    Kind.LAB_STARTED: KindSpec(_S, ("lab",), "every component reported ready"),
    Kind.LAB_STOPPING: KindSpec(_S, ("lab",), "the lab is being stopped"),
    Kind.LAB_STOPPED: KindSpec(_S, ("lab",), "every process the lab started has ended"),
    Kind.PROCESS_STARTED: KindSpec(_S, ("pid", "module"), "a component process was started"),
    Kind.PROCESS_EXITED: KindSpec(_S, ("pid", "returncode", "signal"), "it ended"),
    Kind.PROCESS_PAUSED: KindSpec(_S, ("pid", "by"), "frozen (SIGSTOP), sockets open"),
    Kind.PROCESS_RESUMED: KindSpec(_S, ("pid",), "SIGCONT after a pause"),
    Kind.COMPONENT_RESTARTED: KindSpec(_S, ("target", "pid"), "started again by the lab"),
    Kind.COMPONENT_OUTPUT: KindSpec(_S, ("line",), "a stdout line that was not an event"),
    Kind.COMPONENT_STDERR: KindSpec(_S, ("line",), "a line the component wrote to stderr"),
    Kind.COMPONENT_JOINED: KindSpec(_S, ("peer",), "a component joined over the socket channel"),
    Kind.COMPONENT_LEFT: KindSpec(_S, ("reason",), "a socket-channel component went away"),
    Kind.COMPONENT_UNRESPONSIVE: KindSpec(_S, ("on",), "stopped (on) or resumed answering"),
    Kind.SIP_BAD_MESSAGE: KindSpec(_S, ("flow", "error"), "unparseable SIP arrived"),
    Kind.TRANSPORT_CLOSED: KindSpec(_H, ("flow", "reason"), "a connection closed"),
    Kind.LINK_CHANGED: KindSpec(_S, ("partition", "impair"), "in-process link fault state"),
    Kind.DNS_QUERY: KindSpec(_H, ("qname", "qtype", "rcode"), "one query answered"),
    Kind.DNS_DROPPED: KindSpec(_H, ("qname",), "a query left unanswered by a fault"),
    Kind.DNS_CHANGE: KindSpec(_S, ("op", "zone"), "records changed at run time"),
    Kind.REGISTER_ANSWERED: KindSpec(_H, ("aor", "code", "source"), "a REGISTER answered"),
    Kind.MAINTENANCE: KindSpec(_S, ("on", "registrations"), "maintenance mode on or off"),
    Kind.BINDING_ADDED: KindSpec(_S, ("aor", "contact"), "a new binding"),
    Kind.BINDING_REFRESHED: KindSpec(_H, ("aor", "contact"), "an existing binding refreshed"),
    Kind.BINDING_REMOVED: KindSpec(_S, ("aor", "contact"), "a binding removed by its client"),
    Kind.BINDING_EXPIRED: KindSpec(_S, ("aor", "contact"), "a binding ran out"),
    Kind.AUTH_FAILED: KindSpec(_H, ("aor", "source", "reason"), "digest credentials refused"),
    Kind.AUTH_LOCKOUT: KindSpec(_S, ("source", "on"), "a source locked out or let back in"),
    Kind.CAPACITY: KindSpec(_S, ("on", "registrations", "capacity"), "peer full, or room again"),
    Kind.BINDING_RESTORED: KindSpec(_S, ("aor", "contact", "expires"), "learned back from peers"),
    Kind.CLUSTER_JOINED: KindSpec(_S, ("peer", "bindings"), "a peer link up, snapshot applied"),
    Kind.CLUSTER_LEFT: KindSpec(_S, ("peer", "reason"), "a peer link down"),
    Kind.CLUSTER_DOUBLE: KindSpec(_S, ("aor", "on", "peers"), "an AOR bound on several peers"),
    Kind.REGISTRATION_STATE: KindSpec(_S, ("aor", "state", "reason"), "RoomOS status change"),
    Kind.REGISTRATION_REFRESHED: KindSpec(_H, ("aor", "expires"), "a refresh succeeded"),
    Kind.REGISTRATION_BACKOFF: KindSpec(_S, ("aor", "wait"), "every target failed; waiting"),
    Kind.TRANSPORT_LOST: KindSpec(_S, ("aor", "host", "flow"), "the endpoint's flow was lost"),
    Kind.LOCATOR_RESTART: KindSpec(_S, ("aor", "uri"), "the endpoint resolves again"),
    Kind.DNS_LOCATED: KindSpec(_S, ("aor", "uri", "strategy", "target"), "a target found"),
    Kind.STACK_CONFIGURED: KindSpec(_S, ("aor", "target", "transport"), "new default proxy"),
    Kind.SIP_WARNING: KindSpec(_S, ("aor", "header"), "a Warning header was received"),
    Kind.REGISTRATION_FLOW: KindSpec(
        _S, ("aor", "reg_id", "state", "reason"), "one Outbound flow's status change"
    ),
    Kind.ENDPOINT_WARNING: KindSpec(_S, ("aor", "text"), "a setting will not do what it seems"),
    Kind.ENDPOINT_CONFIGURED: KindSpec(_S, ("aor", "changed"), "settings changed at run time"),
    Kind.SCENARIO_RUN: KindSpec(
        _S, ("scenario", "run", "phase", "fault", "target", "option"), "a scenario run's bounds"
    ),
}

HIGH_RATE: frozenset[Kind] = frozenset(k for k, spec in CATALOGUE.items() if spec.rate is _H)
