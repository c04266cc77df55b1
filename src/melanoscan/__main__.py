"""``python -m melanoscan``: the same command line as ``melanoscan``."""

from melanoscan.cli import app

app()
