"""What every service of ``compose.yaml`` runs: ``python -m emulator.lab.container MODULE ARGS``.

The components and the supervisor of one container lab share one secret: the channel token a
component listening beyond loopback requires, which is also the bearer token of the lab's
control plane. The first container to start makes it, in the volume every service mounts
(``/run/siplab/token``); the others read it; nobody types it, and the host's ``siplab`` reads it
from the lab's state file. Then this process becomes ``python -m MODULE ARGS`` (exec: the
container's init signals the component itself).

``health PORT...`` is the services' health check: ready means listening on every port, read from
``/proc/net/tcp`` so that checking opens no connection and adds no event to the lab.

Only the standard library is imported here: a health check runs every few seconds.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from emulator.channel import TOKEN_ENV

TOKEN_FILE_ENV = "SIPLAB_TOKEN_FILE"
DEFAULT_TOKEN_FILE = "/run/siplab/token"
MODULES = ("dnsserver", "registrar", "endpoint", "emulator.lab.runner")
LISTEN = "0A"  # the TCP state LISTEN in /proc/net/tcp


def shared_token(path: Path) -> str:
    """The lab's token in ``path``, made by whichever container gets there first."""
    if not path.exists():
        mine = path.with_name(f".token-{secrets.token_hex(8)}")
        mine.write_text(secrets.token_urlsafe(24), encoding="utf-8")
        try:
            os.link(mine, path)  # atomic and never replaces: the first writer's token wins
        except FileExistsError:
            pass
        finally:
            mine.unlink()
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"{path} is empty; remove it (docker compose down -v) to make a new one")
    return token


def listening_ports(tables: tuple[str, ...] = ("/proc/net/tcp", "/proc/net/tcp6")) -> set[int]:
    found: set[int] = set()
    for table in tables:
        try:
            rows = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 3 and fields[3] == LISTEN:
                found.add(int(fields[1].rsplit(":", 1)[1], 16))
    return found


def main(argv: list[str]) -> int:
    modules = "|".join(MODULES)
    usage = f"usage: python -m emulator.lab.container {{{modules}}} ARGS... | health PORT..."
    if not argv:
        print(usage, file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    if command == "health":
        missing = {int(port) for port in args} - listening_ports()
        if missing:
            print(f"not listening on {', '.join(map(str, sorted(missing)))}", file=sys.stderr)
        return 1 if missing else 0
    if command not in MODULES:
        print(usage, file=sys.stderr)
        return 2
    try:
        token = shared_token(Path(os.environ.get(TOKEN_FILE_ENV, DEFAULT_TOKEN_FILE)))
    except (OSError, ValueError) as exc:
        print(f"cannot get the lab's token: {exc}", file=sys.stderr)
        return 2
    os.environ[TOKEN_ENV] = token
    os.execv(sys.executable, [sys.executable, "-m", command, *args])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
