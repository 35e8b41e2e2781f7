"""The registrar's hot path compiled with mypyc: the same Python modules, built as C extensions
(emulator/compiled.py lists them; docs/performance.md says what it gains). Everything else is in
pyproject.toml. ``SIPLAB_COMPILE=0`` builds pure Python (an image without a compiler), and the
project runs the same either way."""

from __future__ import annotations

import os

from setuptools import setup

from emulator.compiled import sources

if os.environ.get("SIPLAB_COMPILE", "1") == "0":
    setup()
else:
    from mypyc.build import mypycify

    setup(ext_modules=mypycify(sources(), opt_level="3"))
