"""`assetmatch ab report` over a temp lake's feedback table, and `assetmatch api-key`."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from assetmatch.cli import app
from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.serving.auth import hash_key
from assetmatch.serving.feedback import Answer, feedback_row


def test_ab_report_joins_feedback_to_arms(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    rows = [
        feedback_row(f"{i:032x}", Answer("ga", "r", ("a", "b"), "champion", "1"), ["a"]) for i in range(10)
    ] + [
        feedback_row(f"{i + 50:032x}", Answer("ga", "r", ("a",), "challenger", "2"), ["a"]) for i in range(10)
    ]
    lake.append(T.FEEDBACK, rows, run_id="test")
    config = tmp_path / "assetmatch.yaml"
    config.write_text(f"lake:\n  uri: {tmp_path / 'lake'}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["--config", str(config), "ab", "report", "--json", "--rounds", "200"])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.output)
    assert report["business"] == "ga"
    means = {a["arm"]: a["mean"] for a in report["arms"]}
    assert means["challenger"] == 1.0 and abs(means["champion"] - 2 / 3) < 1e-9
    assert abs(report["diff"] - 1 / 3) < 1e-9
    table = CliRunner().invoke(app, ["--config", str(config), "ab", "report"])
    assert table.exit_code == 0 and "challenger" in table.output


def test_api_key_new_prints_a_key_and_its_hash() -> None:
    result = CliRunner().invoke(app, ["api-key", "new"])
    assert result.exit_code == 0
    lines = dict(line.split(":", 1) for line in result.output.strip().splitlines())
    assert hash_key(lines["key"].strip()) == lines["sha256"].strip()
    hashed = CliRunner().invoke(app, ["api-key", "hash", "--key", "abc"])
    assert hashed.output.strip() == hash_key("abc")
