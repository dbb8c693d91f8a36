"""What the per-business shards of every path have in common: a folder name per business, and the
reuse of an unchanged shard's files from the previous published index.

The dense (`assetmatch.recall.dense`) and lexical (`assetmatch.recall.lexical`) paths each keep one
shard per business. A build compares a shard's digest (what its files depend on) with the previous
index's; when it is unchanged the files are hard-linked instead of rebuilt, so a change confined to
one business rewrites that business's shards only.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path


def shard_folder_name(business: str) -> str:
    """A file-system-safe, unique folder name for a business."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", business)[:40]
    return f"{readable}-{hashlib.sha256(business.encode('utf-8')).hexdigest()[:8]}"


def link_shard(source: Path, target: Path, required: str) -> bool:
    """Reuse a previous build's shard: hard-link its files (copy when links are impossible).

    required: a file the shard cannot be without; False when the source lacks it (an incomplete or
    pruned shard: the caller rebuilds it)."""
    if not (source / required).exists():
        return False
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        try:
            os.link(path, target / path.name)
        except OSError:  # another file system, or links not supported
            shutil.copy2(path, target / path.name)
    return True
