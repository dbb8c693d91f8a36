"""Adapter calibration time on a deployment's own lists: answers shared between cascade rules
(`training.evaluate.calibrate`, the product) against every rule answering alone (the reference,
`share_answers=False`), in one run, on the same judged lists — and both must choose the same
calibration.

For every business of a deployment (`assetmatch demo --dir D` leaves one in D) and each adapter its
registry holds (`champion`, `challenger`, `challenger-shared`), the held-out requirements the A/B
gate judges on are judged once (coarse answer + the adapter's logits, as the gate runs it); then
`calibrate` runs on them both ways, `--repeats` times each, alternating. Training calibrates every
adapter once on all of its lists and once per fold of the cross-fitting (5), and the gate
cross-fits the challengers again: the figure is per call.

    HF_HUB_OFFLINE=1 nice .venv/bin/python benchmarks/fine_calibration.py --config D/assetmatch.yaml
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ALIASES = ("champion", "challenger", "challenger-shared")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True, help="the deployment's assetmatch.yaml")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per way and adapter (3)")
    args = parser.parse_args()

    from assetmatch.config import load_settings
    from assetmatch.lake.delta import Lake
    from assetmatch.matching.fine import read_calibration
    from assetmatch.matching.matcher import visible_businesses
    from assetmatch.ranking.candidates import production_candidates
    from assetmatch.ranking.config import RankerConfig
    from assetmatch.registry.mlflow import Registry
    from assetmatch.training import evaluate as ev
    from assetmatch.training.pairs import labelled_from_lake, split_holdout
    from assetmatch.training.train import judge_folder, selection_context

    print(f"load average at start: {os.getloadavg()}", flush=True)
    settings = load_settings(args.config)
    registry = Registry.from_settings(settings)
    lake = Lake.from_settings(settings)
    cache = Path(tempfile.mkdtemp(prefix="fine-calibration-"))
    print(
        f"{'business':<9} {'adapter':<22} {'lists':>5} {'shared s/call':>13} {'alone s/call':>12} "
        f"{'speedup':>7}  same calibration"
    )
    totals = {"shared": 0.0, "alone": 0.0}
    for business in settings.business_names():
        own = {a.asset_id for a in lake.read_assets(businesses=[business])}
        library = {a.asset_id: a for a in lake.read_assets(businesses=visible_businesses(settings, business))}
        candidates = production_candidates(settings, list(library.values()))
        ctx = selection_context(candidates)
        labelled = labelled_from_lake(lake, business, own)
        for alias in ALIASES:
            mv = registry.version_by_alias(business, alias)
            if mv is None:
                continue
            folder = registry.download_adapter(business, str(mv.version), cache / business / str(mv.version))
            config = RankerConfig.load(folder)
            familiar = read_calibration(folder).familiar
            _, held_out = split_holdout(labelled, config.validation_fraction)
            judged = judge_folder(
                folder, library, held_out, candidates, config.candidate_k, settings.ranker.quantize
            )
            seconds: dict[str, list[float]] = {"shared": [], "alone": []}
            chosen = {}
            for _ in range(args.repeats):
                for way, share in (("shared", True), ("alone", False)):
                    start = time.perf_counter()
                    chosen[way] = ev.calibrate(judged, ctx, familiar, share_answers=share)
                    seconds[way].append(time.perf_counter() - start)
            shared, alone = (statistics.median(seconds[w]) for w in ("shared", "alone"))
            totals["shared"] += shared
            totals["alone"] += alone
            print(
                f"{business:<9} {f'{alias} v{mv.version}':<22} {len(judged):>5} {shared:>13.2f} "
                f"{alone:>12.2f} {alone / shared:>6.1f}x  {chosen['shared'] == chosen['alone']}",
                flush=True,
            )
    if totals["shared"]:
        print(
            f"all adapters, one call each: {totals['shared']:.1f} s shared, {totals['alone']:.1f} s alone "
            f"({totals['alone'] / totals['shared']:.1f}x); load average at end: {os.getloadavg()}"
        )


if __name__ == "__main__":
    main()
