"""The ``melanoscan`` command line: parse, call one library function, render.

Each command lives in the module of its concern and registers itself on :data:`app`.
Exit codes: 0 success; 1 a run failed after starting (see the command's help); 2 bad input
(missing or unreadable data source, bad option or config); 130 interrupted.
"""

from melanoscan.cli import data, evaluation, inference, serving, training
from melanoscan.cli._app import app

__all__ = ["app", "data", "evaluation", "inference", "serving", "training"]
