"""Set-selection calibration time: every rule run over every requirement (`select` per rule and
requirement, the reference) against `grid_scores` (one walk per rule without the thresholds), in
one run, on the same lists — and the two must give every rule the same set F1 and exact match.

The lists are synthetic and seeded (up to 10 tables of 3 databases per requirement, scores with
steep and flat drops, request terms, a join graph, 1-4 gold tables), the size of the demo's coarse
fit (~1,700 requirements with the cold-history copies) by default. The grids are the product's:
`coarse` (`matching.selection.default_grid`, 2,048 rules: the index build) and `fine`
(`training.evaluate.selection_grid`, 304 rules on ~60 validation lists: every adapter calibration,
five per adapter in the gate's cross-fitting).

    nice .venv/bin/python benchmarks/selection_calibration.py
    nice .venv/bin/python benchmarks/selection_calibration.py --grid fine --requirements 60
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import time

from assetmatch.matching.selection import (
    CalibrationExample,
    ScoredTable,
    SelectionParams,
    _evaluate,
    default_grid,
    grid_scores,
)
from assetmatch.training.evaluate import selection_grid


def load() -> str:
    return f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores"


def lists(n: int, seed: int) -> tuple[list[CalibrationExample], dict[str, set[str]]]:
    rng = random.Random(seed)
    tables = [f"t{i}" for i in range(60)]
    edges: dict[str, set[str]] = {t: set() for t in tables}
    for _ in range(90):
        a, b = rng.sample(tables, 2)
        edges[a].add(b)
        edges[b].add(a)
    examples = []
    for _ in range(n):
        ids = rng.sample(tables, 10)
        scores = sorted((rng.choice([rng.random(), rng.random() ** 4]) for _ in ids), reverse=True)
        terms = ["name", "pet", "course", "age", "city"]
        ranked = [
            ScoredTable(a, s, f"db{int(a[1:]) % 3}", frozenset(rng.sample(terms, rng.randint(0, 2))))
            for a, s in zip(ids, scores)
        ]
        examples.append(CalibrationExample(ranked, set(rng.sample(ids[:5], rng.randint(1, 4)))))
    return examples, edges


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grid", choices=["coarse", "fine"], default="coarse")
    parser.add_argument("--requirements", type=int, default=1700)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    grid = default_grid() if args.grid == "coarse" else selection_grid()
    examples, edges = lists(args.requirements, args.seed)

    def neighbors(asset_id: str) -> set[str]:
        return edges.get(asset_id, set())

    print(f"{args.grid} grid, {len(examples)} requirements; {load()}", flush=True)
    keys = list(grid)
    started = time.perf_counter()
    reference = {
        values: _evaluate(SelectionParams.model_validate(dict(zip(keys, values))), examples, neighbors)
        for values in itertools.product(*(grid[k] for k in keys))
    }
    rule_by_rule = time.perf_counter() - started
    started = time.perf_counter()
    fast = grid_scores(examples, neighbors, grid)
    one_walk = time.perf_counter() - started
    if fast != reference:
        raise SystemExit("grid_scores disagrees with running every rule")
    print(
        f"{len(reference)} rules: every rule run {rule_by_rule:.2f} s, grid_scores {one_walk:.2f} s "
        f"({rule_by_rule / one_walk:.1f}x), identical scores; {load()}"
    )


if __name__ == "__main__":
    main()
