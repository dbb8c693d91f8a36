"""Does the learned coarse ranker get better with Feast features? Measured on the demo businesses.

    nice .venv/bin/python benchmarks/features_quality.py [--dir .assetmatch/bench-features] [--seed 0]

Steps: 1. generate the demo warehouse, ingest it, materialize features at the demo's reference time;
2. build the recall indexes; 3. recall candidates for every train and test requirement;
4. fetch point-in-time features for every (candidate, requirement time) in one `historical` call, so
a requirement only sees usage logged before it (no leakage from its own or later queries);
5. fit the learned fusion twice on split `train` only — without and with the features — and
6. rank the test requirements (intents never seen in training) with both and print the metrics.

Spider/CSpider have no query logs: every usage feature is its default there, so they cannot change
the ranking on those benchmarks (not run here).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from assetmatch.evaluation import metrics as M
from assetmatch.matching.fusion import FeatureBuilder, TrainingGroup, collect_candidates, fit_learned_fusion
from assetmatch.models import Requirement


class PointInTimeFeatures:
    """A FeatureProvider over precomputed point-in-time values: `online` answers for the requirement
    currently being featurized (set `current` before building its matrix)."""

    def __init__(self, feature_names: list[str]) -> None:
        self.feature_names = feature_names
        self.current: dict[str, dict[str, float]] = {}

    def online(self, asset_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        return {a: self.current[a] for a in asset_ids}

    def historical(self, rows: Sequence[tuple[str, datetime]]) -> list[dict[str, float]]:
        raise NotImplementedError("precomputed values only")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=Path(".assetmatch/bench-features"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from assetmatch.demo.pipeline import DemoContext, reference_time, run_steps
    from assetmatch.features.provider import FeastFeatureProvider
    from assetmatch.lake.delta import Lake
    from assetmatch.matching.matcher import Matcher
    from assetmatch.recall.index import IndexSet

    # 1-2. demo warehouse, lake, features, indexes
    ctx = DemoContext(dir=args.dir, fresh=True)
    run_steps(ctx, only=["generate", "ingest", "features"])
    settings = ctx.settings
    now = reference_time(ctx)
    lake = Lake.from_settings(settings)
    index = IndexSet.build(lake, settings)
    matcher = Matcher(index, settings)

    # 3. candidates per requirement
    reqs: dict[str, list[Requirement]] = {
        split: [r for r in lake.read_requirements(split=split) if r.gold_assets]
        for split in ("train", "test")
    }
    # train requirements (fitted on) are in the usage history: their own entries do not vote, as in
    # `fit_matching`; test requirements are recalled as serving recalls a request
    candidates = {
        r.id: list(
            collect_candidates(matcher.recall(r.business, r.text, leave_own_out=split == "train")).values()
        )
        for split, split_reqs in reqs.items()
        for r in split_reqs
    }

    # 4. point-in-time features, one batched historical call
    provider = FeastFeatureProvider(settings)
    rows: list[tuple[str, datetime]] = []
    keys: list[tuple[str, str]] = []
    for split in reqs.values():
        for r in split:
            as_of = r.ts or now
            for c in candidates[r.id]:
                rows.append((c.asset_id, as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)))
                keys.append((r.id, c.asset_id))
    values = provider.historical(rows)
    pit: dict[str, dict[str, dict[str, float]]] = {}
    for (req_id, asset_id), v in zip(keys, values):
        pit.setdefault(req_id, {})[asset_id] = v
    non_default = sum(1 for v in values if v["queries_90d"] > 0)
    print(f"{len(rows)} (candidate, requirement-time) rows; {non_default} with usage before the requirement")

    # 5-6. fit on train, rank test, with and without the features
    fp = PointInTimeFeatures(provider.feature_names)
    results: dict[str, dict[str, float]] = {}
    for label, builder in (
        ("without features", FeatureBuilder(index.assets, index.neighbors)),
        ("with features", FeatureBuilder(index.assets, index.neighbors, feature_provider=fp)),
    ):

        def matrix(r: Requirement, b: FeatureBuilder = builder) -> np.ndarray:
            fp.current = pit.get(r.id, {})
            return b.matrix(r.text, candidates[r.id])

        groups = [
            TrainingGroup(
                r.id,
                builder.group_of(r.gold_assets[0]),
                matrix(r),
                np.array([int(c.asset_id in set(r.gold_assets)) for c in candidates[r.id]], dtype=int),
                [c.asset_id for c in candidates[r.id]],
                len(set(r.gold_assets)),
            )
            for r in reqs["train"]
        ]
        model, _ = fit_learned_fusion(groups, builder.feature_names, seed=args.seed)
        rankings = []
        for r in reqs["test"]:
            cands = candidates[r.id]
            scores = model.predict(matrix(r)) if cands else np.zeros(0)
            rankings.append([cands[j].asset_id for j in np.argsort(-scores, kind="stable")])
        results[label] = M.ranking_metrics(rankings, [r.gold_assets for r in reqs["test"]])
        chosen = model.cv.chosen if model.cv else "?"
        print(
            f"{label:17s} (model {chosen}): " + "  ".join(f"{k} {v:.3f}" for k, v in results[label].items())
        )

    base, with_f = results["without features"], results["with features"]
    print(
        f"difference on {len(reqs['test'])} test requirements (with - without): "
        + "  ".join(f"{k} {with_f[k] - base[k]:+.3f}" for k in base)
    )


if __name__ == "__main__":
    main()
