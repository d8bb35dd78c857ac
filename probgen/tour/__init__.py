"""``probgen tour``: every model on the embedded 8x8 digits, one HTML report.

Each section fits its models on the training split, scores the held-out split
and returns table rows and figures; :func:`run_tour` writes ``DIR/index.html``
with the PNG files beside it.
"""
from .report import Row, Section, run_tour

__all__ = ["Row", "Section", "run_tour"]
