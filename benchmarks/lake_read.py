"""How the lake reads a table: `lake.delta.read_delta` (a local table through pyarrow's own
filesystem, threaded) against deltalake's default (`DeltaTable.to_pyarrow_table`: its Python
filesystem handler, threaded) and that handler decoded on the calling thread (what the lake did before),
on a Delta table of asset-like rows.

The lake stopped reading through the handler because a process that exits right after such a scan
aborts in some runs (`delta_dataset`'s docstring). This prints the three reads' median seconds over
--repeats on tables of --rows rows, the ratios to `read_delta`, and the load average: run it on a
quiet machine.

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


def handler_one_thread(dt: Any) -> Any:
    """The lake's read before: deltalake's filesystem handler, decoded on the calling thread."""
    return dt.to_pyarrow_dataset().to_table(use_threads=False)


def median_seconds(read: Callable[[], Any], repeats: int) -> float:
    read()  # untimed: the first read of a table pays for pyarrow's thread pool and file handles
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
    print("| rows | read_delta s | handler, threaded s | handler, one thread s | ratios to read_delta |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            path = str(Path(tmp) / f"assets-{n}")
            write_deltalake(path, pa.table(asset_rows(n)))
            dt = DeltaTable(path)
            lake = median_seconds(partial(read_delta, dt), args.repeats)
            threaded = median_seconds(dt.to_pyarrow_table, args.repeats)
            one = median_seconds(partial(handler_one_thread, dt), args.repeats)
            print(
                f"| {n:,} | {lake:.4f} | {threaded:.4f} | {one:.4f} | "
                f"{threaded / lake:.2f}× / {one / lake:.2f}× |",
                flush=True,
            )
    print(f"load average at the end: {os.getloadavg()}")
    # the handler's reads above are what `read_delta` avoids: give pyarrow's threads time to finish
    # before the interpreter exits, or this script may abort on the way out
    time.sleep(1)


if __name__ == "__main__":
    main()
