"""The Great Expectations suites: one JSON file per lake table under `expectations/`.

The checked-in files are the source of truth. They are plain GX 1.x `ExpectationSuite` documents;
thresholds that come from settings are GX suite parameters (`{"$PARAMETER": "max_text_length"}`)
filled in at validation time, so the same file serves every deployment. Each expectation carries
`meta.reason`, the text written to the quarantine table for the rows it refuses. An expectation
with `meta.skip_when_empty: <parameter>` is left out when that parameter is empty (the business
whitelist, when no businesses are configured).

Where the files are: `$ASSETMATCH_EXPECTATIONS_DIR`, else `./expectations`, else the
`expectations/` folder of the checkout this package runs from.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite

ENV_VAR = "ASSETMATCH_EXPECTATIONS_DIR"
SUITE_TABLES = ("assets", "query_log", "requirements", "glossary")


def expectations_dir() -> Path:
    """The folder holding `<table>.json` suites (see the module docstring for the search order)."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        folder = Path(configured)
        if not folder.is_dir():
            raise FileNotFoundError(f"{ENV_VAR}={configured} is not a folder")
        return folder
    for candidate in (Path.cwd() / "expectations", Path(__file__).resolve().parents[3] / "expectations"):
        if (candidate / "assets.json").is_file():
            return candidate
    raise FileNotFoundError(f"no expectations/ folder with suites found; set {ENV_VAR}")


def suite_path(table: str) -> Path:
    return expectations_dir() / f"{table}.json"


@cache
def _read(path: Path, mtime_ns: int) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        doc: dict[str, Any] = json.load(f)
    if doc.get("name") != path.stem:
        raise ValueError(f"{path}: suite name {doc.get('name')!r} must equal the table name {path.stem!r}")
    return doc


def suite_document(table: str) -> dict[str, Any]:
    """The suite file of `table` as JSON (re-read when the file changes)."""
    path = suite_path(table)
    if not path.is_file():
        raise FileNotFoundError(f"no expectation suite for lake table {table!r} at {path}")
    return _read(path, path.stat().st_mtime_ns)


def load_suite(table: str, parameters: dict[str, Any] | None = None) -> ExpectationSuite:
    """A GX ExpectationSuite built from the checked-in file of `table`.

    `parameters` decides which `skip_when_empty` expectations are kept; their values are passed
    to GX at validation time, not baked into the suite.
    """
    from great_expectations.core import ExpectationSuite

    doc = suite_document(table)
    params = parameters or {}
    expectations = [
        dict(e)
        for e in doc["expectations"]
        if not (e.get("meta", {}).get("skip_when_empty") and not params.get(e["meta"]["skip_when_empty"]))
    ]
    return ExpectationSuite(
        name=doc["name"], expectations=expectations, meta=doc.get("meta"), notes=doc.get("notes")
    )
