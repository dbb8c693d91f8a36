"""Starting the command line imports no heavy library: each command imports what it needs."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "sentence_transformers", "prefect", "mlflow", "feast", "great_expectations")


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
    assert sorted(m for m in HEAVY if m in loaded) == []
