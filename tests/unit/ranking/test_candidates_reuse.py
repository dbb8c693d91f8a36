"""The production candidates are built once per publication: training several adapters and gating
them asks the coarse path about the same requirements, and each answer is computed once."""

from __future__ import annotations

import threading
from pathlib import Path

from assetmatch.pipeline import build_and_fit
from assetmatch.ranking.candidates import CoarseCandidates, production_candidates
from assetmatch.serving.synthetic import synthetic_deployment


def test_the_production_candidates_are_reused_until_the_publication_or_the_settings_change(
    tmp_path: Path,
) -> None:
    settings = synthetic_deployment(tmp_path, ("ga",), tables=20, adapters=False, paths=("lexical",))
    build_and_fit(settings)
    first = production_candidates(settings, [])
    assert isinstance(first, CoarseCandidates)
    answer = first.coarse("ga", "daily active users by channel", 5)
    again = production_candidates(settings, [])
    assert again is first  # same settings, index and coarse fit: the answers computed so far are kept
    assert again.coarse("ga", "daily active users by channel", 5) is answer

    # a concurrent task (another thread) builds its own: a CoarseCandidates is not shared across threads
    other: list[object] = []
    worker = threading.Thread(target=lambda: other.append(production_candidates(settings, [])))
    worker.start()
    worker.join()
    assert isinstance(other[0], CoarseCandidates) and other[0] is not first

    # other settings, or a new publication (index rebuilt, coarse model refitted): a new one
    wider = settings.model_copy(update={"ranker": settings.ranker.model_copy(update={"max_length": 64})})
    assert production_candidates(wider, []) is not first
    build_and_fit(settings, full=True)
    rebuilt = production_candidates(settings, [])
    assert isinstance(rebuilt, CoarseCandidates) and rebuilt is not first
    assert production_candidates(settings, []) is rebuilt
