"""`assetmatch ingest` output: skipped and quarantined counts per source (table and --json), the same
refused rows stored once across identical runs, and a failing source as one line and exit code 1,
its traceback only with --verbose or in --log-file."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from assetmatch.cli import app
from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, sources: list[dict[str, object]]) -> Path:
    config = tmp_path / "assetmatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "lake": {"uri": str(tmp_path / "lake")},
                "businesses": [{"name": "g1"}],
                "validation": {"max_bad_fraction": 1.0},
                "sources": sources,
            }
        ),
        encoding="utf-8",
    )
    return config


def catalog(tmp_path: Path) -> Path:
    """Two good tables, one line that is not JSON (skipped by the source), one table without
    columns (refused by validation)."""
    path = tmp_path / "catalog.jsonl"
    good = [
        {"business": "g1", "database": "dw", "table": t, "columns": [{"name": "id", "type": "int"}]}
        for t in ("orders", "users")
    ]
    lines = [json.dumps(r) for r in good]
    lines.append('{"business": "g1", "table": "trunc')
    lines.append(json.dumps({"business": "g1", "database": "dw", "table": "empty_one", "columns": []}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_summary_counts_skipped_and_quarantined_rows_once(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        [
            {
                "name": "cat",
                "type": "catalog_file",
                "business": "g1",
                "options": {"path": str(catalog(tmp_path))},
            }
        ],
    )
    runner = CliRunner()
    first = runner.invoke(app, ["-c", str(config), "ingest", "--run-id", "r1"])
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    header = next(line for line in lines if "skip" in line and "quar" in line)
    row = next(line for line in lines if re.match(r"│ cat ", line))
    names = [c.strip() for c in re.split(r"[┃│]", header) if c.strip()]
    cells = [c.strip() for c in re.split(r"[┃│]", row) if c.strip()]
    by_name = dict(zip(names, cells, strict=True))
    assert (by_name["read"], by_name["new"], by_name["skip"], by_name["quar"]) == ("3", "2", "1", "2")
    assert "cat: 2 new quarantine rows" in first.output
    lake = Lake(str(tmp_path / "lake"))
    assert len(lake.read_quarantine(source="cat")) == 2
    version = lake.version(T.QUARANTINE)

    again = runner.invoke(app, ["-c", str(config), "ingest", "--run-id", "r2", "--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.output)
    assets = summary["sources"][0]["tables"]["assets"]
    assert (assets["skipped"], assets["quarantined"]) == (1, 2)
    assert summary["sources"][0]["quarantine_stored"] == 0
    assert summary["totals"]["assets"]["skipped"] == 1
    assert lake.version(T.QUARANTINE) == version and len(lake.read_quarantine(source="cat")) == 2


def test_failing_source_is_one_line_and_exit_1(tmp_path: Path) -> None:
    bad_url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"
    config = write_config(
        tmp_path,
        [
            {
                "name": "cat",
                "type": "catalog_file",
                "business": "g1",
                "options": {"path": str(catalog(tmp_path))},
            },
            {
                "name": "dw",
                "type": "sql",
                "business": "g1",
                "options": {"url": bad_url, "connect_retries": 1, "connect_timeout_s": 2},
            },
        ],
    )
    runner = CliRunner()
    quiet = runner.invoke(app, ["-c", str(config), "ingest"])
    assert quiet.exit_code == 1
    failed = [line for line in quiet.output.splitlines() if "source dw failed" in line]
    assert len(failed) == 1 and "cannot connect" in failed[0]
    assert "Traceback" not in quiet.output
    assert "details: --verbose" in quiet.output
    assert "cat" in quiet.output  # the other source still ran

    log = tmp_path / "ingest.log"
    logged = runner.invoke(app, ["-c", str(config), "ingest", "--json", "--log-file", str(log)])
    assert logged.exit_code == 1 and "Traceback" not in logged.output
    assert "Traceback" in log.read_text(encoding="utf-8") and "source dw failed" in log.read_text(
        encoding="utf-8"
    )

    verbose = runner.invoke(app, ["-c", str(config), "ingest", "--verbose"])
    assert verbose.exit_code == 1 and "Traceback" in verbose.output
