"""SASRec with the cold-start item table (`models/sasrec.py`), no Spark: variants, the delta bound with PAD and cold
rows kept at zero, causal attention, PAD handling, the warm-only softmax, and the history-average baseline."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ubp.models.sasrec import SASRec, SASRecConfig, score_history_avg

N_WARM, N_COLD, D = 5, 3, 8
N_ITEMS = 1 + N_WARM + N_COLD


def _content(seed: int = 0) -> torch.Tensor:
    return torch.randn(N_ITEMS, D, generator=torch.Generator().manual_seed(seed))


def _model(variant: str = "delta", **kw) -> SASRec:
    torch.manual_seed(0)
    cfg = SASRecConfig(n_items=N_ITEMS, n_warm=N_WARM, d_model=D, max_len=6, n_heads=2, dropout=0.0,
                       variant=variant, **kw)
    return SASRec(cfg, None if variant == "id_only" else _content()).eval()


def test_variants_and_their_item_tables():
    with pytest.raises(ValueError, match="unknown variant"):
        SASRecConfig(variant="nope")
    frozen = _model("frozen", delta_max=0.5)
    assert frozen.config.delta_max == 0.0 and frozen.items.delta is None  # pure content
    assert torch.equal(frozen.item_vectors()[1:], _content()[1:]) and not frozen.item_vectors()[0].any()
    with pytest.raises(ValueError, match=r"needs a \(9, 8\) content table"):
        SASRec(SASRecConfig(n_items=N_ITEMS, n_warm=N_WARM, d_model=D), torch.zeros(3, D))
    with pytest.raises(ValueError, match="history_avg has no network"):
        SASRec(SASRecConfig(n_items=N_ITEMS, n_warm=N_WARM, d_model=D, variant="history_avg"), _content())
    model = _model("delta", weight_decay=0.1)
    groups = model.param_groups()
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert len(groups[1]["params"]) == 1 and groups[1]["params"][0] is model.items.delta
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))  # each parameter once
    assert len(_model("content_finetune").param_groups()) == 1  # no delta: one group


def test_delta_bound_keeps_pad_and_cold_rows_at_zero():
    model = _model("delta", delta_max=0.1)
    with torch.no_grad():
        model.items.delta.copy_(torch.randn(N_ITEMS, D))
    model.items.constrain_()
    norms = model.items.delta.detach().norm(dim=1)
    assert float(norms.max()) <= 0.1 + 1e-6 and float(norms[1 : N_WARM + 1].min()) > 0.099
    assert not model.items.delta[0].any() and not model.items.delta[N_WARM + 1 :].any()
    vectors = model.item_vectors()
    assert torch.equal(vectors[N_WARM + 1 :], _content()[N_WARM + 1 :])  # cold items: exactly their content


def test_attention_is_causal_and_pad_positions_are_zero():
    model = _model()
    seq = torch.tensor([[0, 0, 1, 2, 3, 4]])
    changed = seq.clone()
    changed[0, 5] = 5  # only the newest item differs
    h1, h2 = model.encode(seq), model.encode(changed)
    assert torch.allclose(h1[0, :5], h2[0, :5], atol=1e-6)  # earlier positions never see later items
    assert not torch.allclose(h1[0, 5], h2[0, 5])
    assert not h1[0, :2].any()  # left padding: zero hidden states
    assert torch.isfinite(h1).all()


def test_scores_and_the_warm_only_softmax():
    seq = torch.tensor([[0, 1, 2, 3], [4, 5, 1, 2]])
    delta = _model("delta")
    scores = delta.score(seq)
    assert scores.shape == (2, N_ITEMS) and torch.isinf(scores[:, 0]).all()
    assert torch.isfinite(scores[:, 1:]).all()  # cold items are ranked from their content
    id_only = _model("id_only").score(seq)
    assert torch.isinf(id_only[:, N_WARM + 1 :]).all() and torch.isfinite(id_only[:, 1 : N_WARM + 1]).all()
    target = torch.tensor([[0, 2, 3, 4], [5, 1, 2, 3]])
    h = delta.encode(seq)
    logits = h @ delta.items.weight()[: N_WARM + 1].T
    logits[..., 0] = float("-inf")
    ref = F.cross_entropy(logits.view(-1, N_WARM + 1), target.view(-1), ignore_index=0)
    assert torch.allclose(delta.loss(seq, target), ref)
    delta.loss(seq, target).backward()
    assert not delta.items.delta.grad[N_WARM + 1 :].any()  # cold rows are in no softmax and no history


def test_history_average_baseline():
    content = torch.zeros(4, 2)
    content[1], content[2], content[3] = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])
    scores = score_history_avg(content, torch.tensor([[0, 1, 2], [0, 0, 3]]))
    assert torch.isinf(scores[:, 0]).all()
    assert torch.allclose(scores[0, 1:], torch.tensor([0.5, 0.5, 1.0]))  # user = mean of items 1 and 2
    assert torch.allclose(scores[1, 1:], torch.tensor([1.0, 1.0, 2.0]))  # PAD does not dilute the mean
