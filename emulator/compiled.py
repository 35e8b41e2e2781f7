"""The modules that setup.py compiles with mypyc, and a check that none of them runs stale.

An editable install (``make venv``) builds the C extensions next to their sources, and Python
imports an extension before its source: a module edited after the build would run as it was
built. :func:`stale` names such modules; the test session refuses to start with one, and a
component says so on stderr. ``python emulator/compiled.py`` prints their source files (the
Makefile rebuilds when one changes).
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

# The modules every REGISTER goes through; each must type-check under mypy, which mypyc runs.
MODULES = (
    "emulator.memo",
    "emulator.deadlines",
    "emulator.eventrate",
    "emulator.sip.message",
    "emulator.sip.framing",
    "emulator.sip.transaction",
    "registrar.bindings",
    "registrar.cluster",
    "registrar.core",
)
ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("emulator", "registrar", "endpoint", "dnsserver")


def sources() -> list[str]:
    """The compiled modules' source files, relative to the project root."""
    return [name.replace(".", "/") + ".py" for name in MODULES]


def leftovers() -> list[Path]:
    """Extensions in the source tree of modules no longer compiled (an earlier build's): they
    would still be imported, and fail or run old code."""
    compiled = {ROOT / source for source in sources()}
    return [
        built
        for package in PACKAGES
        for built in (ROOT / package).rglob("*" + EXTENSION_SUFFIXES[0])
        if built.with_name(built.name.removesuffix(EXTENSION_SUFFIXES[0]) + ".py") not in compiled
    ]


def stale() -> list[str]:
    """The compiled modules whose source changed after their extension was built, and the
    extensions left from an earlier build."""
    out = [str(built.relative_to(ROOT)) for built in leftovers()]
    for source in sources():
        path = ROOT / source
        built = path.with_name(path.stem + EXTENSION_SUFFIXES[0])
        try:
            if path.stat().st_mtime > built.stat().st_mtime:
                out.append(source)
        except FileNotFoundError:
            continue  # not compiled (SIPLAB_COMPILE=0), or not a source checkout
    return out


def stale_message(modules: list[str]) -> str:
    return (
        f"{', '.join(modules)}: changed since compiled, or left from an earlier build, and "
        "would run as it was: run 'make venv' to compile again (SIPLAB_COMPILE=0 for pure "
        "Python)"
    )


if __name__ == "__main__":
    print(" ".join(sources()))
