"""What reading a lake table on one thread costs: `lake.delta.read_delta` against deltalake's threaded
`DeltaTable.to_pyarrow_table`, on a Delta table of asset-like rows.

The lake decodes on the calling thread because a process that exits right after a threaded scan
aborts in some runs (`read_delta`'s docstring). This prints both reads' median seconds over
--repeats on tables of --rows rows, the ratio, and the load average: run it on a quiet machine.

    .venv/bin/python benchmarks/lake_read.py --rows 10000 100000
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any


def asset_rows(n: int) -> dict[str, list[object]]:
    """Rows shaped like the assets table's heavy columns: ids, comments and a JSON column list."""
    columns = ", ".join(
        f'{{"name": "col_{j}", "type": "varchar", "comment": "column {j}"}}' for j in range(12)
    )
    return {
        "asset_id": [f"dw.table_{i}" for i in range(n)],
        "business": [f"b{i % 7}" for i in range(n)],
        "table_comment": [f"table {i}: daily active users by channel and region" for i in range(n)],
        "columns_json": [f"[{columns}]" for _ in range(n)],
        "usage": [i % 97 for i in range(n)],
    }


def median_seconds(read: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        read()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from assetmatch.lake.delta import read_delta

    print(f"load average at start: {os.getloadavg()}")
    print("| rows | one thread (read_delta) s | threaded (to_pyarrow_table) s | one thread / threaded |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            path = str(Path(tmp) / f"assets-{n}")
            write_deltalake(path, pa.table(asset_rows(n)))
            dt = DeltaTable(path)
            one = median_seconds(partial(read_delta, dt), args.repeats)
            threaded = median_seconds(dt.to_pyarrow_table, args.repeats)
            print(f"| {n:,} | {one:.4f} | {threaded:.4f} | {one / threaded:.2f}× |", flush=True)
    print(f"load average at the end: {os.getloadavg()}")
    # the threaded reads above are what `read_delta` avoids: give their pool's threads time to
    # finish before the interpreter exits, or this script may abort on the way out
    time.sleep(1)


if __name__ == "__main__":
    main()
