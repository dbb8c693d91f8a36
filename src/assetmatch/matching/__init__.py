"""Matching: multi-path recall results fused, ranked and selected into a table set."""
