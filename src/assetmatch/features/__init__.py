"""Feast features for ranking: frames computed from the lake (build), the Feast store built from the
settings (store), and the FeatureProvider the Matcher reads (provider). Feast is imported lazily."""
