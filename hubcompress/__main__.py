"""``python -m hubcompress ...``: the same command line as ``hubcompress`` (what launchers such as
torchrun start)."""

from __future__ import annotations

from .cli import main

main()
