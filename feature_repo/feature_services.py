"""Feature services, versioned by name: a ranker trained on `coarse_ranker_v1` keeps reading exactly
those features; a changed feature set is a new service (`coarse_ranker_v2`), never an edit."""

from feast import FeatureService

from features import asset_co_usage, asset_metadata, asset_usage

OWNER = "ranking@assetmatch"

coarse_ranker_v1 = FeatureService(
    name="coarse_ranker_v1",
    features=[asset_usage, asset_metadata],
    description="Per-table features read by the learned coarse ranker (assetmatch.matching).",
    owner=OWNER,
    tags={"stage": "coarse_rank", "version": "1"},
)

set_selection_v1 = FeatureService(
    name="set_selection_v1",
    features=[asset_co_usage],
    description="Co-usage of table pairs, read by set selection to keep join partners together.",
    owner=OWNER,
    tags={"stage": "set_selection", "version": "1"},
)
