"""Side-by-side benchmarks of probgen against its peers (torch, scikit-learn).

Run from the project root: ``python -m benchmarks --json FILE [--quick] [--only SUBSTRING]``.
Each case module ``benchmarks/case_*.py`` defines ``CASES``, a list of :class:`benchmarks._harness.Case`.
"""
