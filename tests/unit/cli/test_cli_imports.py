"""Starting the command line imports no heavy library: each command imports what it needs; a real
`assetmatch match` on a fitted deployment answers without scikit-learn (the coarse model's numpy
predictor), pandas or SciPy's statistics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from catalog_project import catalog_project

HEAVY = ("torch", "transformers", "sentence_transformers", "prefect", "mlflow", "feast", "great_expectations")
MATCH_HEAVY = (*HEAVY, "sklearn", "pandas", "scipy.stats", "joblib")


def _modules_after(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_the_entry_point_imports_no_heavy_library() -> None:
    loaded = _modules_after("from assetmatch.cli import app")
    assert "assetmatch.cli" in loaded  # the probe itself works
    assert sorted(m for m in HEAVY if m in loaded) == []


def test_the_match_command_path_imports_no_heavy_library() -> None:
    """What `assetmatch match` imports before it reads any file: the matcher, the index loader, the
    query encoder and the CLI's caches; torch & co. come only with a fine-ranking cascade."""
    loaded = _modules_after(
        "from assetmatch.cli import app\n"
        "import assetmatch.cli.match_cache, assetmatch.matching.matcher, assetmatch.recall.index\n"
        "import assetmatch.recall.query_encoder"
    )
    assert "assetmatch.matching.matcher" in loaded
    assert sorted(m for m in MATCH_HEAVY if m in loaded) == []


TABLES: list[dict[str, Any]] = [
    {
        "business": "shop",
        "database": "store",
        "table": "customer",
        "columns": [{"name": "customer_id", "primary_key": True}, "full_name", "city"],
    },
    {
        "business": "shop",
        "database": "store",
        "table": "orders",
        "columns": [{"name": "order_id", "primary_key": True}, "customer_id", "quantity"],
        "foreign_keys": [["customer_id", "customer.customer_id"]],
    },
    {"business": "shop", "database": "school", "table": "student", "columns": ["student_id", "age"]},
    {
        "business": "shop",
        "database": "school",
        "table": "exam",
        "columns": ["exam_id", "student_id", "score"],
    },
]


def test_a_match_with_a_fitted_coarse_model_imports_no_scikit_learn(tmp_path: Path) -> None:
    """`index build` fits and saves the coarse model (with its numpy predictor); a new `assetmatch
    match` process then answers with the fitted model and never imports scikit-learn, pandas, joblib
    or SciPy's statistics; without the numpy file it answers the same through joblib."""

    config, _ = catalog_project(tmp_path, TABLES)
    models = tmp_path / "indexes" / "matching"
    assert (models / "coarse.joblib").exists() and (models / "coarse.npz").exists()

    def match() -> tuple[dict[str, Any], set[str]]:
        argv = ["assetmatch", "-c", str(config), "match", "-b", "shop", "customer orders quantity", "--json"]
        script = (
            "import atexit, json, sys\n"
            f"out = {str(tmp_path / 'modules.json')!r}\n"
            "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted(sys.modules))))\n"
            f"sys.argv = {argv!r}\n"
            "from assetmatch.cli import app\n"
            "app()"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        loaded = set(json.loads((tmp_path / "modules.json").read_text()))
        return json.loads(done.stdout), loaded

    answer, loaded = match()
    assert answer["coarse_model"] == "synthetic"  # the fitted model answered, not RRF
    assert "assetmatch.matching.predictor" in loaded
    assert sorted(m for m in MATCH_HEAVY if m in loaded) == []

    (models / "coarse.npz").unlink()
    through_joblib, loaded = match()
    assert "sklearn" in loaded  # the probe sees scikit-learn when it is imported
    assert through_joblib["selected"] == answer["selected"]
    ranked = [(t["asset_id"], t["score"]) for t in answer["ranked"]]
    joblib_ranked = [(t["asset_id"], t["score"]) for t in through_joblib["ranked"]]
    assert [a for a, _ in joblib_ranked] == [a for a, _ in ranked]
    assert max(abs(x - y) for (_, x), (_, y) in zip(ranked, joblib_ranked)) < 1e-9
    assert (models / "coarse.npz").exists()  # written again by that load
