"""The coarse model's numpy predictor (`coarse.npz`) answers as the scikit-learn model does, and is
only used for the very joblib file it was written for."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assetmatch.matching.fusion import CVReport, LearnedFusion, _model_grid
from assetmatch.matching.predictor import LinearPredictor, TreesPredictor, export_arrays, read_predictor

N_FEATURES = 9
NAMES = [f"f{i}" for i in range(N_FEATURES)]


def _data(seed: int, n: int = 400, nan_share: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)) * np.linspace(0.01, 50.0, N_FEATURES)
    x[:, 3] = rng.integers(0, 4, n)  # a few discrete values: rows land exactly on split thresholds
    x[:, 5] = (x[:, 5] > 0).astype(float)
    logit = 0.8 * x[:, 0] / 0.01 - 0.05 * x[:, 8] + x[:, 3] - 1.0
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    if nan_share:
        x[rng.random(x.shape) < nan_share] = np.nan
    return x, y


def _queries(x_train: np.ndarray, seed: int) -> np.ndarray:
    """Training rows (on thresholds), fresh random rows, and extreme values."""
    rng = np.random.default_rng(seed)
    fresh = rng.normal(size=(300, N_FEATURES)) * rng.choice([0.01, 1.0, 100.0], size=N_FEATURES)
    extreme = np.array([[1e300] * N_FEATURES, [-1e300] * N_FEATURES, [0.0] * N_FEATURES])
    return np.vstack([x_train, fresh, extreme])


def _fusion(model: Any) -> LearnedFusion:
    cv = CVReport({"m": 0.5}, "m", 3, 40, 2)
    return LearnedFusion(model, NAMES, cv=cv, trained_on="blended")


@pytest.mark.parametrize("family", sorted(_model_grid(0)))
def test_numpy_predictor_equals_sklearn_for_every_model_family(family: str, tmp_path: Path) -> None:
    from sklearn.base import clone

    x, y = _data(1)
    model = clone(_model_grid(0)[family]).fit(x, y)
    path = _fusion(model).save(tmp_path / "coarse.joblib")

    loaded = LearnedFusion.load(path)
    assert isinstance(loaded.model, TreesPredictor if family.startswith("hgb") else LinearPredictor)
    queries = _queries(x, 2)
    expected = model.predict_proba(queries)[:, 1]
    got = loaded.predict(queries)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    assert len(set(np.round(got, 6))) > 10  # the check compares real, varied probabilities
    # what was saved with the model comes back from the numpy file
    assert loaded.feature_names == NAMES
    assert loaded.trained_on == "blended"
    assert loaded.cv == CVReport({"m": 0.5}, "m", 3, 40, 2)


def test_missing_values_take_the_trees_missing_branch_as_in_sklearn(tmp_path: Path) -> None:
    from sklearn.base import clone

    x, y = _data(3, nan_share=0.15)
    model = clone(_model_grid(0)["hgb_lr0.1_leaves15"]).fit(x, y)
    predictor = LearnedFusion.load(_fusion(model).save(tmp_path / "coarse.joblib")).model
    assert isinstance(predictor, TreesPredictor)
    assert predictor.missing_left[~predictor.is_leaf].any()  # some splits send NaN left, some right
    assert not predictor.missing_left[~predictor.is_leaf].all()
    queries = _queries(x, 4)
    queries[np.random.default_rng(5).random(queries.shape) < 0.3] = np.nan
    queries[:5] = np.nan  # rows with nothing known
    np.testing.assert_allclose(
        predictor.predict_proba(queries)[:, 1], model.predict_proba(queries)[:, 1], rtol=0, atol=1e-9
    )


def test_trees_fitted_without_missing_values_route_them_as_sklearn(tmp_path: Path) -> None:
    from sklearn.base import clone

    x, y = _data(6)
    model = clone(_model_grid(0)["hgb_lr0.05_leaves31"]).fit(x, y)
    predictor = LearnedFusion.load(_fusion(model).save(tmp_path / "coarse.joblib")).model
    queries = _queries(x, 7)[:200]
    queries[::2, ::3] = np.nan
    queries[1::4, 1] = np.inf
    np.testing.assert_allclose(
        predictor.predict_proba(queries)[:, 1], model.predict_proba(queries)[:, 1], rtol=0, atol=1e-9
    )


def test_logistic_regression_refuses_non_finite_features_like_sklearn(tmp_path: Path) -> None:
    from sklearn.base import clone

    x, y = _data(8)
    model = clone(_model_grid(0)["logreg_C1.0"]).fit(x, y)
    predictor = LearnedFusion.load(_fusion(model).save(tmp_path / "coarse.joblib")).model
    assert isinstance(predictor, LinearPredictor)
    bad = x[:3].copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError):
        model.predict_proba(bad)
    with pytest.raises(ValueError, match="NaN or infinity"):
        predictor.predict_proba(bad)
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        predictor.predict_proba(bad)


def test_a_row_of_another_width_is_refused(tmp_path: Path) -> None:
    from sklearn.base import clone

    x, y = _data(9)
    for family in ("logreg_C1.0", "hgb_lr0.1_leaves15"):
        model = clone(_model_grid(0)[family]).fit(x, y)
        predictor = LearnedFusion.load(_fusion(model).save(tmp_path / family / "coarse.joblib")).model
        with pytest.raises(ValueError, match="expects 9 features"):
            predictor.predict_proba(x[:, :5])


def test_bare_logistic_regression_and_unscaled_pipelines_are_exported(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _data(10)
    queries = _queries(x, 11)
    for i, model in enumerate(
        [
            LogisticRegression(max_iter=2000),
            make_pipeline(StandardScaler(with_mean=False), LogisticRegression(max_iter=2000)),
            make_pipeline(StandardScaler(with_std=False), LogisticRegression(max_iter=2000)),
        ]
    ):
        model.fit(x, y)
        predictor = LearnedFusion.load(_fusion(model).save(tmp_path / str(i) / "coarse.joblib")).model
        assert isinstance(predictor, LinearPredictor)
        np.testing.assert_allclose(
            predictor.predict_proba(queries), model.predict_proba(queries), rtol=0, atol=1e-9
        )


def test_models_it_cannot_evaluate_get_no_numpy_file(tmp_path: Path) -> None:
    """Categorical splits, other pipelines and other families: joblib only, and an older numpy file
    of the same name is removed rather than left beside another model."""
    from sklearn.base import clone
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    x, y = _data(12)
    target = tmp_path / "coarse.joblib"
    _fusion(clone(_model_grid(0)["logreg_C1.0"]).fit(x, y)).save(target)
    assert LearnedFusion.predictor_path(target).exists()

    categorical = HistGradientBoostingClassifier(max_iter=20, categorical_features=[3]).fit(x, y)
    others = [
        categorical,
        make_pipeline(MinMaxScaler(), clone(_model_grid(0)["logreg_C1.0"].steps[-1][1])).fit(x, y),
        RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y),
    ]
    for model in others:
        assert export_arrays(model) is None
        _fusion(model).save(target)
        assert not LearnedFusion.predictor_path(target).exists()
        loaded = LearnedFusion.load(target)
        assert type(loaded.model) is type(model)
        np.testing.assert_allclose(loaded.predict(x), model.predict_proba(x)[:, 1])


def test_a_numpy_file_of_another_model_is_ignored_and_rewritten(tmp_path: Path) -> None:
    from sklearn.base import clone
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = _data(13)
    first = clone(_model_grid(0)["logreg_C1.0"]).fit(x, y)
    second = clone(_model_grid(0)["hgb_lr0.1_leaves15"]).fit(x, 1 - y)  # another answer
    target = tmp_path / "coarse.joblib"
    npz = LearnedFusion.predictor_path(target)
    _fusion(first).save(target)
    shutil.copy(npz, tmp_path / "first.npz")
    _fusion(second).save(target)
    shutil.copy(tmp_path / "first.npz", npz)  # stale: e.g. a copy restored beside a newer model
    assert read_predictor(npz, target) is None

    loaded = LearnedFusion.load(target)
    assert isinstance(loaded.model, HistGradientBoostingClassifier)  # joblib, the source of truth
    np.testing.assert_allclose(loaded.predict(x), second.predict_proba(x)[:, 1])
    # the load wrote the predictor of the model it read: the next load needs no scikit-learn
    again = LearnedFusion.load(target)
    assert isinstance(again.model, TreesPredictor)
    np.testing.assert_allclose(again.predict(x), second.predict_proba(x)[:, 1], rtol=0, atol=1e-9)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_numpy_file_falls_back_to_joblib(damage: str, tmp_path: Path) -> None:
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    x, y = _data(14)
    model = clone(_model_grid(0)["logreg_C1.0"]).fit(x, y)
    target = _fusion(model).save(tmp_path / "coarse.joblib")
    npz = LearnedFusion.predictor_path(target)
    data = npz.read_bytes()
    npz.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a zip" * 10, "empty": b""}[damage])

    loaded = LearnedFusion.load(target)
    assert isinstance(loaded.model, Pipeline)
    np.testing.assert_allclose(loaded.predict(x), model.predict_proba(x)[:, 1])
    assert read_predictor(npz, target) is not None  # rewritten by the load


def test_a_numpy_file_that_cannot_be_written_is_no_error(tmp_path: Path) -> None:
    """The load writes the numpy file only as a cache: when it cannot (here a folder holds its
    name), the model still loads from joblib and nothing is lost."""
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    x, y = _data(15)
    model = clone(_model_grid(0)["logreg_C1.0"]).fit(x, y)
    target = _fusion(model).save(tmp_path / "coarse.joblib")
    npz = LearnedFusion.predictor_path(target)
    npz.unlink()
    (npz / "in-the-way").mkdir(parents=True)

    loaded = LearnedFusion.load(target)
    assert isinstance(loaded.model, Pipeline)
    np.testing.assert_allclose(loaded.predict(x), model.predict_proba(x)[:, 1])
    assert (npz / "in-the-way").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coarse.joblib", "coarse.npz"]  # no temp file left
