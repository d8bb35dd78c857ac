"""``python -m benchmarks --json FILE [--markdown FILE] [--quick] [--only SUBSTRING] [--threads N]``."""
from __future__ import annotations

import argparse
import json
import os
import sys

from ._harness import discover, run_case, set_threads


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--json", metavar="FILE", help="write the records as JSON to FILE")
    p.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown rows to FILE (for docs)")
    p.add_argument("--quick", action="store_true", help="smaller inputs, fewer repeats")
    p.add_argument("--only", metavar="SUBSTRING", help="run the cases whose name contains SUBSTRING")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads for numba, BLAS and torch alike (default: all cores)")
    args = p.parse_args(argv)

    env = set_threads(args.threads)
    cases = [c for c in discover() if not args.only or args.only in c.name]
    if not cases:
        print(f"no benchmark case matches {args.only!r}", file=sys.stderr)
        return 2
    records = []
    header = f"{'case':<28} {'shape':<28} {'dtype':<8} {'probgen':>10} {'peer':>14} {'peer_s':>10} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for case in cases:
        rec = run_case(case, quick=args.quick, threads=args.threads)
        records.append(rec)
        print(f"{rec['name']:<28} {rec['shape']:<28} {rec['dtype']:<8} "
              f"{rec['probgen_s'] * 1e3:>8.2f}ms {rec['peer']:>14} {rec['peer_s'] * 1e3:>8.2f}ms "
              f"{rec['ratio']:>7.3f}", flush=True)
    if args.markdown:
        rows = ["| case | shape | dtype | probgen (ms) | peer | peer (ms) | ratio |", "|---|---|---|---|---|---|---|"]
        rows += [f"| `{r['name']}` | {r['shape']} | {r['dtype']} | {r['probgen_s'] * 1e3:.2f} | {r['peer']} | "
                 f"{r['peer_s'] * 1e3:.2f} | {r['ratio']:.3f} |" for r in records]
        with open(args.markdown, "w", encoding="utf-8") as fh:
            fh.write("\n".join(rows) + "\n")
        print(f"wrote {args.markdown}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"environment": env, "quick": args.quick, "records": records}, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
