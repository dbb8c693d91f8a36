"""The fitted coarse model's probabilities in numpy alone, for a process that answers one requirement.

Unpickling the scikit-learn model (`coarse.joblib`) imports scikit-learn, and with it SciPy's stats
and pandas: ~1-2.5 s of CPU before the first answer of `assetmatch match`. When the model is saved,
the few arrays its `predict_proba` reads are written beside it (`coarse.npz`) and evaluated here:

- `HistGradientBoostingClassifier` (binary): every tree's node arrays (feature, numeric threshold,
  where a missing value goes, children, leaf flag and value) and the baseline raw prediction; all
  trees are walked at once, a row's leaf values are added tree by tree in scikit-learn's order and
  the sum goes through the sigmoid. NaN follows the node's `missing_go_to_left` as in scikit-learn;
  a model with categorical splits or a preprocessor is not exported.
- `LogisticRegression`, alone or after a `StandardScaler` in a pipeline: (x - mean) / scale, then
  x @ coef.T + intercept and the sigmoid; non-finite input is refused as scikit-learn refuses it.

A second stage (`fusion.LearnedFusion.second`) is written into the same file, its arrays' names
prefixed. Any other model is not exported (the joblib file is then the only one). The file is
stamped with the joblib file's SHA-256: `read_predictor` returns None for a file that does not
match (stale, from another model, or another format), and the caller unpickles the joblib model,
the source of truth.

Hand-rolled on purpose: no maintained library evaluates these scikit-learn models without importing
scikit-learn (ONNX runtimes would add a large dependency for a few dozen lines of numpy).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT = "assetmatch-coarse-predictor/1"
SECOND_PREFIX = "second."  # the second stage's arrays (`fusion.LearnedFusion.second`), beside the first's


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sigmoid(raw: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-raw)) without overflow (scipy.special.expit's value)."""
    e = np.exp(-np.abs(raw))
    return np.where(raw >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _as_rows(features: np.ndarray, n_features: int) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ValueError(f"X has shape {x.shape}, but the coarse model expects {n_features} features per row")
    return x


class TreesPredictor:
    """A binary gradient-boosted tree ensemble (the nodes of scikit-learn's `TreePredictor`s)."""

    kind = "trees"

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.n_features = int(arrays["n_features"])
        self.baseline = float(arrays["baseline"])
        self.roots = arrays["roots"].astype(np.intp)
        self.feature = arrays["feature_idx"].astype(np.intp)
        self.threshold = arrays["num_threshold"].astype(np.float64)
        self.missing_left = arrays["missing_go_to_left"].astype(bool)
        self.left = arrays["left"].astype(np.intp)
        self.right = arrays["right"].astype(np.intp)
        self.is_leaf = arrays["is_leaf"].astype(bool)
        self.value = arrays["value"].astype(np.float64)

    @staticmethod
    def export(model: Any) -> dict[str, np.ndarray] | None:
        """The arrays of a fitted binary HistGradientBoostingClassifier, None if it cannot be exported."""
        predictors = getattr(model, "_predictors", None)
        baseline = np.asarray(getattr(model, "_baseline_prediction", np.zeros(0)))
        if (
            not predictors
            or getattr(model, "n_trees_per_iteration_", None) != 1
            or len(getattr(model, "classes_", ())) != 2
            or baseline.size != 1
            or getattr(model, "_preprocessor", None) is not None
            or getattr(model, "is_categorical_", None) is not None
        ):
            return None
        trees = [it[0].nodes for it in predictors]
        if any(len(it) != 1 for it in predictors) or any(t["is_categorical"].any() for t in trees):
            return None
        sizes = np.array([len(t) for t in trees], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        nodes = np.concatenate(trees)
        shift = np.repeat(offsets, sizes)
        return {
            "n_features": np.array(int(model.n_features_in_)),
            "baseline": np.array(float(baseline.ravel()[0])),
            "roots": offsets,
            "feature_idx": nodes["feature_idx"].astype(np.int64),
            "num_threshold": nodes["num_threshold"].astype(np.float64),
            "missing_go_to_left": nodes["missing_go_to_left"].astype(np.uint8),
            "left": nodes["left"].astype(np.int64) + shift,
            "right": nodes["right"].astype(np.int64) + shift,
            "is_leaf": nodes["is_leaf"].astype(np.uint8),
            "value": nodes["value"].astype(np.float64),
        }

    def raw(self, features: np.ndarray) -> np.ndarray:
        x = _as_rows(features, self.n_features)
        n = x.shape[0]
        rows = np.arange(n)[:, None]
        node = np.broadcast_to(self.roots, (n, len(self.roots))).copy()  # (rows, trees)
        leaf = self.is_leaf[node]
        while not leaf.all():
            data = x[rows, self.feature[node]]
            # scikit-learn: NaN goes where the node sends missing values, else `value <= threshold` is left
            go_left = np.where(np.isnan(data), self.missing_left[node], data <= self.threshold[node])
            node = np.where(leaf, node, np.where(go_left, self.left[node], self.right[node]))
            leaf = self.is_leaf[node]
        values = self.value[node]
        out = np.full(n, self.baseline, dtype=np.float64)
        for t in range(values.shape[1]):  # tree by tree, the order scikit-learn adds them in
            out += values[:, t]
        return out

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        p = _sigmoid(self.raw(features))
        return np.stack([1.0 - p, p], axis=1)


class LinearPredictor:
    """Logistic regression, optionally after standard scaling (a `make_pipeline(StandardScaler(), ...)`)."""

    kind = "linear"

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.mean = arrays["mean"].astype(np.float64)
        self.scale = arrays["scale"].astype(np.float64)
        self.scaled = bool(arrays["scaled"])
        self.coef = arrays["coef"].astype(np.float64)  # (1, n_features), as scikit-learn keeps it
        self.intercept = arrays["intercept"].astype(np.float64)

    @staticmethod
    def export(model: Any) -> dict[str, np.ndarray] | None:
        steps = [s for _, s in getattr(model, "steps", [("model", model)])]
        clf = steps[-1]
        if type(clf).__name__ != "LogisticRegression" or len(getattr(clf, "classes_", ())) != 2:
            return None
        coef = np.asarray(clf.coef_, dtype=np.float64)
        n = coef.shape[1]
        mean, scale, scaled = np.zeros(n), np.ones(n), False
        if len(steps) == 2:
            scaler = steps[0]
            if type(scaler).__name__ != "StandardScaler":
                return None
            scaled = True
            # transform() subtracts mean_ / divides by scale_ only as with_mean / with_std say
            # (mean_ is kept for with_mean=False too)
            if scaler.with_mean:
                mean = np.asarray(scaler.mean_, dtype=np.float64)
            if scaler.with_std:
                scale = np.asarray(scaler.scale_, dtype=np.float64)
        elif len(steps) != 1:
            return None
        return {
            "mean": mean,
            "scale": scale,
            "scaled": np.array(scaled),
            "coef": coef,
            "intercept": np.asarray(clf.intercept_, dtype=np.float64),
        }

    def raw(self, features: np.ndarray) -> np.ndarray:
        x = _as_rows(features, self.coef.shape[1])
        if not np.isfinite(x).all():
            raise ValueError("Input X contains NaN or infinity (the coarse model needs finite features)")
        if self.scaled:
            x = (x - self.mean) / self.scale
        return np.asarray((x @ self.coef.T + self.intercept).ravel())

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        p = _sigmoid(self.raw(features))
        return np.stack([1.0 - p, p], axis=1)


PREDICTORS: dict[str, type[TreesPredictor] | type[LinearPredictor]] = {
    TreesPredictor.kind: TreesPredictor,
    LinearPredictor.kind: LinearPredictor,
}


def export_arrays(model: Any) -> tuple[str, dict[str, np.ndarray]] | None:
    """(kind, arrays) of a model this module can evaluate, None for any other model."""
    for kind, cls in PREDICTORS.items():
        arrays = cls.export(model)
        if arrays is not None:
            return kind, arrays
    return None


def write_predictor(
    target: Path, model: Any, source_sha256: str, meta: dict[str, Any], second: Any | None = None
) -> bool:
    """Write the numpy predictor of `model` (and of its second stage `second`, if any) to `target`,
    stamped with the SHA-256 of the joblib bytes `model` was saved as or read from (hashed by the
    caller from those very bytes, so a joblib file replaced meanwhile never gets this stamp); remove
    `target` when a stage cannot be exported. Atomic; True if written."""
    exported = export_arrays(model)
    second_exported = export_arrays(second) if second is not None else None
    if exported is None or (second is not None and second_exported is None):
        target.unlink(missing_ok=True)
        return False
    kind, arrays = exported
    header = {"format": FORMAT, "kind": kind, "source_sha256": source_sha256, **meta}
    named: dict[str, Any] = dict(arrays)
    if second_exported is not None:
        header["second_kind"] = second_exported[0]
        named.update({SECOND_PREFIX + name: value for name, value in second_exported[1].items()})
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as fh:
            np.savez(fh, header=np.array(json.dumps(header, ensure_ascii=False)), **named)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return True


Predictor = TreesPredictor | LinearPredictor


def read_predictor(path: Path, source: Path) -> tuple[Predictor, Predictor | None, dict[str, Any]] | None:
    """(predictor, second-stage predictor or None, header) from `path` if it exists and was written
    for `source` as it is now."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            arrays = {name: data[name] for name in data.files if name != "header"}
        kinds = [header.get("kind"), *([header["second_kind"]] if "second_kind" in header else [])]
        if header.get("format") != FORMAT or any(k not in PREDICTORS for k in kinds):
            log.info("%s has another format (%s): using %s", path, header.get("format"), source.name)
            return None
        if header.get("source_sha256") != file_sha256(source):
            log.info("%s was written for another %s: using the latter", path, source.name)
            return None
        first = {n: v for n, v in arrays.items() if not n.startswith(SECOND_PREFIX)}
        second = None
        if "second_kind" in header:
            stage = {n[len(SECOND_PREFIX) :]: v for n, v in arrays.items() if n.startswith(SECOND_PREFIX)}
            second = PREDICTORS[header["second_kind"]](stage)
        return PREDICTORS[header["kind"]](first), second, header
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        log.info("%s unreadable (%s): using %s", path, exc, source.name)
        return None
