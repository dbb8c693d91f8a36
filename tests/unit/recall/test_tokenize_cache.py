"""jieba's dictionary and CC-CEDICT read word by word from the SQLite caches give the same tokens and
glosses as the dictionaries loaded whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SENTENCES = [
    "上周A渠道的付费用户数",
    "每一个养猫或狗的学生的名字是什么？",
    "星耀对决的日活跃用户和新增用户",
    "dws_user_active_1d 日活跃用户汇总",
]

PROBE = """
import json, sys
from assetmatch.recall import tokenize as tk
out = {"tokens": [tk.tokenize(s) for s in SENTENCES], "glosses": [tk.weighted_gloss_tokens(s) for s in SENTENCES],
       "jieba": type(tk._jieba().dt.FREQ).__name__, "cedict": type(tk.lexicon()).__name__}
print(json.dumps(out, ensure_ascii=False))
"""


def _run(cache: Path) -> dict[str, object]:
    code = f"SENTENCES = {SENTENCES!r}\n{PROBE}"
    env = {**os.environ, "ASSETMATCH_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_cached_dictionaries_give_the_same_tokens_and_glosses(tmp_path: Path) -> None:
    first = _run(tmp_path)  # loads both dictionaries whole and writes the caches
    assert (first["jieba"], first["cedict"]) == ("dict", "dict")
    assert sorted(p.name.split("-")[0] for p in tmp_path.glob("*.sqlite")) == ["cedict", "jieba"]
    second = _run(tmp_path)  # reads them word by word
    assert (second["jieba"], second["cedict"]) == ("_SqliteLookup", "_SqliteLookup")
    assert second["tokens"] == first["tokens"] and second["glosses"] == first["glosses"]
    assert "付费" in second["tokens"][0]  # type: ignore[index]


def test_an_unreadable_cache_is_rebuilt(tmp_path: Path) -> None:
    reference = _run(tmp_path)
    for path in tmp_path.glob("*.sqlite"):
        path.write_bytes(b"not a database")
    again = _run(tmp_path)
    assert (again["jieba"], again["cedict"]) == ("dict", "dict")  # parsed again, same answers
    assert again["tokens"] == reference["tokens"] and again["glosses"] == reference["glosses"]
