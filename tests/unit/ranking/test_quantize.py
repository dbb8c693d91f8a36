"""int8 and bf16 CPU inference of the fine ranker: they rank like float32, and adapters still load,
replace and unload at runtime on a quantized base (hot reload adds them after quantization).

One adapter that ranks the fixture's tables like a trained one (fitted in closed form, see
`_fitted_adapter`) and one random adapter are built once per module; the base is the packaged MiniLM.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assetmatch.ranking.config import RankerConfig
from assetmatch.ranking.model import (
    MultiAdapterScorer,
    ScoreRow,
    bf16_units,
    inference_precision,
    load_base,
    new_adapter,
    quantize_int8,
    save_adapter,
    seed_everything,
)

CONFIG = RankerConfig(max_length=64, lora_dropout=0.0, seed=5, device="cpu")
TABLES = [
    "table dws_active_users_daily: active users per day | columns: dt, user_id, channel",
    "table dws_paying_users_daily: paying users per day | columns: dt, user_id, amount",
    "table dws_new_users_weekly: new registered users per week | columns: week, user_id",
    "table dim_item: item catalogue | columns: item_id, name, price",
    "table ods_login_log: raw login events | columns: ts, user_id, device",
    "table ads_revenue_channel: revenue per channel and day | columns: dt, channel, revenue",
]
REQUIREMENTS = {  # requirement -> index of its table in TABLES
    "daily active users": 0,
    "how many users paid yesterday": 1,
    "new users last week": 2,
    "price of each item": 3,
    "revenue by channel": 5,
}


def _fitted_adapter(folder: Path, seed: int) -> Path:
    """An adapter that ranks like a trained one, built in one forward pass instead of a training run:
    seeded random LoRA A/B (non-trivial, unlike PEFT's zero B), then the head set to the direction
    that separates each requirement's table from the others (difference of class means)."""
    import torch

    seed_everything(seed)
    tokenizer, base, _ = load_base(CONFIG.base, "cpu")
    model = new_adapter(base, CONFIG)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    model.eval()
    head = model.base_model.model.classifier.modules_to_save["default"]
    seen: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach()))
    pairs = [(req, doc) for req in REQUIREMENTS for doc in TABLES]
    gold = torch.tensor([TABLES.index(doc) == REQUIREMENTS[req] for req, doc in pairs])
    with torch.inference_mode():
        model(**tokenizer([p[0] for p in pairs], [p[1] for p in pairs], padding=True, return_tensors="pt"))
    hook.remove()
    features = seen[0]
    direction = features[gold].mean(0) - features[~gold].mean(0)
    with torch.no_grad():
        head.weight.copy_(4 * direction / direction.norm() ** 2)
        head.bias.fill_(float(-(head.weight @ features.mean(0))))
    return save_adapter(model, folder, CONFIG)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from assetmatch.serving.synthetic import untrained_adapter

    root = tmp_path_factory.mktemp("quantize")
    return {
        "trained": _fitted_adapter(root / "trained", seed=5),
        "other": _fitted_adapter(root / "other", seed=6),
        "random": untrained_adapter(root / "random", seed=11),
    }


def _rows(adapter: str) -> list[ScoreRow]:
    return [ScoreRow(adapter, req, doc) for req in REQUIREMENTS for doc in TABLES]


def _lists(scores: list[float]) -> list[np.ndarray]:
    n = len(TABLES)
    return [np.asarray(scores[i : i + n]) for i in range(0, len(scores), n)]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_quantized_scores_rank_like_float32(adapters: dict[str, Path], precision: str) -> None:
    fp32 = MultiAdapterScorer(CONFIG.base, "cpu", max_length=CONFIG.max_length)
    low = MultiAdapterScorer(CONFIG.base, "cpu", max_length=CONFIG.max_length, quantize=precision)
    assert low.quantize == precision
    for scorer in (fp32, low):
        scorer.load_adapter("g", adapters["trained"])
    ref, got = fp32.score_rows(_rows("g")), low.score_rows(_rows("g"))
    assert ref != pytest.approx(got, abs=1e-6)  # it did run in another precision
    spread = float(np.std(ref))
    assert spread > 0.5  # the trained adapter really separates tables...
    assert float(np.max(np.abs(np.asarray(ref) - np.asarray(got)))) < 0.2 * spread  # ...int8/bf16 barely move
    for want, have in zip(_lists(ref), _lists(got)):
        # int8's top table is float32's, or a near-tie of it: how far int8 moves a score depends on
        # the CPU's int8 kernels (up to 12% of the spread on an AVX2-only CPU, which swapped a pair
        # 6.5% of the spread apart), never a table float32 ranks clearly lower
        assert float(want.max() - want[int(np.argmax(have))]) < 0.2 * spread
        assert _spearman(want, have) >= 0.9  # at most one neighbour swap in a list of 6
    assert _spearman(np.asarray(ref), np.asarray(got)) >= 0.95  # all 30 pairs


def test_quantized_base_keeps_lora_and_head_in_float32(adapters: dict[str, Path]) -> None:
    from torch import nn

    scorer = MultiAdapterScorer(CONFIG.base, "cpu", max_length=CONFIG.max_length, quantize="int8")
    scorer.load_adapter("g", adapters["trained"])
    linears = {n: m for n, m in scorer.model.named_modules() if isinstance(m, nn.Linear)}
    int8 = {n for n, m in linears.items() if type(m).__name__ == "Int8Linear"}
    assert int8 and all(n.endswith("base_layer") for n in int8)
    assert all(
        m.weight.dtype.is_floating_point and m.weight.numel() > 0 for n, m in linears.items() if n not in int8
    )
    assert any("lora_A" in n for n in linears) and any("classifier" in n for n in linears)
    assert quantize_int8(scorer._base_model) == 0  # idempotent: nothing left to swap


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_adapters_load_replace_and_unload_on_a_quantized_scorer(
    adapters: dict[str, Path], precision: str
) -> None:
    scorer = MultiAdapterScorer(CONFIG.base, "cpu", max_length=CONFIG.max_length, quantize=precision)
    rows = _rows("a")[:6]
    scorer.load_adapter("a", adapters["trained"])
    first = scorer.score_rows(rows)
    scorer.load_adapter("a", adapters["random"])  # replace the only adapter (hot reload)
    if precision == "bf16":  # base and adapters alike: no float32 adapter casting every layer's input
        import torch

        assert {p.dtype for p in scorer.model.parameters()} == {torch.bfloat16}
    replaced = scorer.score_rows(rows)
    assert replaced != pytest.approx(first, abs=1e-3)
    scorer.load_adapter("b", adapters["trained"])
    scorer.unload_adapter("a")
    assert scorer.score_rows([ScoreRow("b", r.requirement, r.document) for r in rows]) == pytest.approx(first)
    scorer.unload_adapter("b")  # back to the bare (still quantized) base...
    assert scorer.model is None
    scorer.load_adapter("a", adapters["trained"])  # ...which takes adapters again
    assert scorer.score_rows(rows) == pytest.approx(first)
    with pytest.raises(KeyError, match="not loaded"):
        scorer.score_rows([ScoreRow("b", "x", "y")])


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_quantized_mixed_batches_agree_with_serial_scoring(adapters: dict[str, Path], precision: str) -> None:
    scorer = MultiAdapterScorer(
        CONFIG.base, "cpu", max_length=CONFIG.max_length, batch_size=8, quantize=precision
    )
    scorer.load_adapter("a", adapters["trained"])
    scorer.load_adapter("b.cn", adapters["other"])
    rows = [ScoreRow("a" if i % 2 else "b.cn", r.requirement, r.document) for i, r in enumerate(_rows("x"))]
    mixed, serial = scorer.score_rows(rows), scorer.score_rows_serial(rows)
    # Activations are quantized per batch, so batch-mates nudge a row's score: close, not equal.
    gap = np.abs(np.asarray(mixed) - np.asarray(serial))
    assert float(gap.max()) < 0.2 * float(np.std(serial))
    assert _spearman(np.asarray(mixed), np.asarray(serial)) >= 0.95


def test_float32_rows_sorted_by_length_score_as_in_input_order(adapters: dict[str, Path]) -> None:
    scorer = MultiAdapterScorer(CONFIG.base, "cpu", max_length=CONFIG.max_length, batch_size=4)
    scorer.load_adapter("g", adapters["trained"])
    rows = _rows("g")
    one_by_one = [scorer.score_rows([row])[0] for row in rows[:8]]
    assert scorer.score_rows(rows)[:8] == pytest.approx(one_by_one, abs=1e-4)


def test_unknown_quantize_mode_is_refused() -> None:
    with pytest.raises(ValueError, match=r"ranker\.quantize"):
        MultiAdapterScorer(CONFIG.base, "cpu", quantize="int4")


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "expected"),
    [(True, False, "bf16"), (False, True, "bf16"), (True, True, "bf16"), (False, False, "int8")],
)
def test_auto_precision_is_bf16_only_on_cpus_that_multiply_bf16_in_hardware(
    monkeypatch: pytest.MonkeyPatch, amx: bool, avx512_bf16: bool, expected: str
) -> None:
    import torch

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert inference_precision("auto", "cpu") == expected
    assert bf16_units() == [u for u, on in (("amx", amx), ("avx512_bf16", avx512_bf16)) if on]


def test_auto_precision_without_torch_probes_is_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")  # a torch without the probes: int8
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert inference_precision("auto", "cpu") == "int8" and bf16_units() == []
    assert inference_precision("bf16", "cpu") == "bf16" and inference_precision("none", "cpu") == "none"
    assert (
        inference_precision("int8", "cuda") == inference_precision("auto", "cuda") == "none"
    )  # CUDA: bf16 base
