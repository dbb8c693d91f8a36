"""Feast features for ranking: frames computed from the lake (build), the Feast store built from the
settings (store), and the FeatureProvider the Matcher reads (provider). Feast is imported lazily."""

JOURNAL_FILE = "materializations.jsonl"
"""File under `feast.data_dir` where `store.materialize` appends one JSON line per run (lake versions
read, snapshots written). Defined here, without Feast, so the nightly pipeline can read it cheaply."""
