"""The registrar's hot path compiled with mypyc: the same Python modules, built as C extensions
(emulator/compiled.py lists them; docs/performance.md says what it gains). Everything else is in
pyproject.toml. ``SIPLAB_COMPILE=0`` builds pure Python (an image without a compiler), and the
project runs the same either way."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup

# The build backend runs this file with its own sys.path, without the project root on it.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from emulator.compiled import leftovers, sources

for built in leftovers():  # of modules no longer compiled: Python would import them first
    built.unlink()

if os.environ.get("SIPLAB_COMPILE", "1") == "0":
    setup()
else:
    from mypyc.build import mypycify

    setup(ext_modules=mypycify(sources(), opt_level="3"))
