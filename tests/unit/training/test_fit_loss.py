"""The training loss, its batching, and the score fusion fitted on validation lists."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from assetmatch.matching.fine import CoarseAnswer, FineCalibration, log_odds
from assetmatch.ranking.config import RankerConfig
from assetmatch.ranking.finerank import Fusion
from assetmatch.training.pairs import Pair
from assetmatch.training.train import _batches, coarse_priors, pair_loss


def _pairs(requirement: str, gold: int, negatives: int) -> list[Pair]:
    return [Pair(requirement, requirement, f"{requirement}.g{i}", 1.0, "positive") for i in range(gold)] + [
        Pair(requirement, requirement, f"{requirement}.n{i}", 0.0, "hard") for i in range(negatives)
    ]


def test_listwise_loss_pushes_gold_up_and_negatives_down_within_each_requirement() -> None:
    batch = _pairs("a", 1, 3) + _pairs("b", 2, 2)
    logits = torch.zeros(len(batch), requires_grad=True)
    pair_loss(logits, batch, "listwise").backward()
    grad = logits.grad.tolist()  # gradient descent moves logits against the gradient
    assert all(g < 0 for g, p in zip(grad, batch) if p.label == 1.0)
    assert all(g > 0 for g, p in zip(grad, batch) if p.label == 0.0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.zeros(len(batch)), torch.tensor([p.label for p in batch])
    )
    assert float(pair_loss(torch.zeros(len(batch)), batch, "bce")) == pytest.approx(float(bce))
    # listwise = BCE + mean over requirements of -log(share of gold in the softmax): log 4 and log 2
    listwise = float(pair_loss(torch.zeros(len(batch)), batch, "listwise"))
    assert listwise == pytest.approx(float(bce) + (np.log(4) + np.log(2)) / 2)


def test_a_requirement_with_only_positives_adds_no_softmax_term() -> None:
    batch = _pairs("a", 2, 0)
    logits = torch.tensor([0.3, -0.2])
    assert float(pair_loss(logits, batch, "listwise")) == pytest.approx(
        float(pair_loss(logits, batch, "bce"))
    )


def test_listwise_batches_keep_each_requirement_whole_and_cover_every_pair_once() -> None:
    pairs = [p for r in "abcdefg" for p in _pairs(r, 1, 4)]
    config = RankerConfig(batch_size=8, loss="listwise")
    batches = list(_batches(pairs, config, torch.Generator().manual_seed(1)))
    assert sorted(p.asset_id for b in batches for p in b) == sorted(p.asset_id for p in pairs)
    for batch in batches:
        for requirement in {p.requirement_id for p in batch}:
            assert sum(p.requirement_id == requirement for p in batch) == 5
    pointwise = list(
        _batches(pairs, RankerConfig(batch_size=8, loss="bce"), torch.Generator().manual_seed(1))
    )
    assert [len(b) for b in pointwise] == [8, 8, 8, 8, 3]


def test_fusion_learns_to_trust_the_adapter_when_its_logits_separate_gold() -> None:
    rng = np.random.default_rng(0)
    lists = []
    for _ in range(200):
        gold = [False] * 8
        gold[int(rng.integers(8))] = True  # the coarse rank says nothing
        logits = [2.0 if g else float(rng.normal(-1, 0.5)) for g in gold]
        lists.append((logits, None, gold))
    fusion = Fusion.fit(lists)
    assert fusion.weights[0] + fusion.weights[1] > 1.0
    probs = fusion.probs([2.0, -1.0, -1.5])
    assert probs[0] > 0.5 > probs[1] > probs[2]


def test_fusion_falls_back_to_the_coarse_order_when_the_adapter_is_noise() -> None:
    rng = np.random.default_rng(1)
    lists = [([float(v) for v in rng.normal(0, 1, 8)], None, [True] + [False] * 7) for _ in range(200)]
    fusion = Fusion.fit(lists)
    assert fusion.weights[2] < -1.0  # a later coarse rank lowers the probability
    assert abs(fusion.weights[0] + fusion.weights[1]) < 0.5
    probs = fusion.probs([-1.0, 1.0, 0.5])
    assert probs[0] > probs[1] > probs[2]


def test_fusion_without_both_classes_is_the_adapters_own_sigmoid() -> None:
    assert Fusion.fit([([0.1, 0.2], None, [False, False])]) == Fusion()
    assert Fusion.fit([]) == Fusion()
    assert Fusion().probs([0.0, 2.0]) == pytest.approx([0.5, 1 / (1 + np.exp(-2.0))])
    assert Fusion().probs([]) == []


def test_a_pair_the_coarse_prior_already_orders_right_adds_little_gradient() -> None:
    # one requirement: its gold table and a hard negative; the adapter's logits are still zero
    batch = _pairs("a", 1, 1)
    plain = torch.zeros(2, requires_grad=True)
    pair_loss(plain, batch, "listwise").backward()
    # the coarse ranking scores the gold table 0.95 and the negative 0.05: the prior says it already
    confident = [replace(p, prior=float(log_odds([0.95 if p.label else 0.05])[0])) for p in batch]
    on_top = torch.zeros(2, requires_grad=True)
    pair_loss(on_top, confident, "listwise").backward()
    assert on_top.grad.abs().sum() < 0.2 * plain.grad.abs().sum()
    # ... and one it orders wrong adds more than the plain loss does
    wrong = [replace(p, prior=float(log_odds([0.05 if p.label else 0.95])[0])) for p in batch]
    against = torch.zeros(2, requires_grad=True)
    pair_loss(against, wrong, "listwise").backward()
    assert against.grad.abs().sum() > plain.grad.abs().sum()


def test_coarse_priors_read_each_pairs_coarse_score_and_the_lists_lowest_outside_it() -> None:
    answer = CoarseAnswer(["a.g0", "a.n0"], [0.9, 0.2], ["a.g0"])
    pairs = _pairs("a", 1, 2)  # a.n1 is not in the coarse list
    asked: list[tuple[str, str]] = []

    def coarse(requirement_id: str, text: str) -> CoarseAnswer:
        asked.append((requirement_id, text))
        return answer

    priors = {p.asset_id: p.prior for p in coarse_priors(pairs, coarse, 0.5)}
    assert priors["a.g0"] == pytest.approx(0.5 * np.log(0.9 / 0.1))
    assert priors["a.n0"] == pytest.approx(0.5 * np.log(0.2 / 0.8))
    assert priors["a.n1"] == priors["a.n0"]
    assert asked == [("a", "a")]  # one coarse answer per requirement, not one per pair
    assert coarse_priors(pairs, coarse, 0.0) == pairs  # off: the pairs as they were
    assert log_odds([1.0, 0.0]) == pytest.approx([np.log((1 - 1e-4) / 1e-4), -np.log((1 - 1e-4) / 1e-4)])


def test_coarse_offset_is_checked() -> None:
    with pytest.raises(ValueError, match="coarse_offset"):
        RankerConfig(coarse_offset=-1.0)


def test_an_adapter_trained_on_top_of_the_coarse_ranking_is_fused_with_its_prior() -> None:
    # the adapter's residual logits say nothing alone; with the coarse log-odds they are what it learned
    logits, coarse = [0.0, 0.5, -3.0], [0.9, 0.2, 0.6]
    x = Fusion.features(logits, coarse, 0.5)
    assert x[:, 0] == pytest.approx(
        np.asarray(logits) + 0.5 * np.log(np.asarray(coarse) / (1 - np.asarray(coarse)))
    )
    assert Fusion.features(logits, coarse)[:, 0] == pytest.approx(logits)  # no offset: the logits
    assert Fusion(coarse_offset=0.5).probs(logits, coarse) != Fusion().probs(logits, coarse)
    # fitted with its offset, kept with the calibration that serving loads
    rng = np.random.default_rng(2)
    lists = []
    for _ in range(100):
        gold = [bool(g) for g in rng.permutation([1, 0, 0, 0])]
        lists.append(([float(rng.normal()) for _ in gold], [0.8 if g else 0.3 for g in gold], gold))
    fusion = Fusion.fit(lists, coarse_offset=0.5)
    assert fusion.coarse_offset == 0.5
    saved = FineCalibration(fusion=fusion).to_dict()
    assert FineCalibration.from_dict(saved).fusion == fusion
    # a calibration saved before the offset existed reads as no offset
    del saved["fusion"]["coarse_offset"]
    assert FineCalibration.from_dict(saved).fusion.coarse_offset == 0.0
