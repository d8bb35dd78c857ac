"""The ``probgen`` command: ``probgen tour --out DIR`` is the main job."""
from __future__ import annotations

import argparse
import sys


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="probgen",
        description="Autograd-free reference implementations of classic probabilistic generative models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    tour = sub.add_parser(
        "tour",
        help="fit every model on the embedded 8x8 digits and write an HTML report with plots",
    )
    tour.add_argument("--out", default="tour", help="output directory (default: ./tour)")
    tour.add_argument("--quick", action="store_true", help="smaller budgets (a quick smoke run)")
    tour.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    tour.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv=None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "tour":
        from .tour import run_tour

        if args.seed < 0:
            print("probgen tour: --seed must be a non-negative integer", file=sys.stderr)
            return 2
        index = run_tour(args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress)
        print(f"wrote {index}")
        return 0
    return 2  # pragma: no cover - argparse enforces the sub-command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
