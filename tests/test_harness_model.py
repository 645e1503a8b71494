"""Model, local training, aggregation: pure functions against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fl_harness.aggregation import aggregate_experts, aggregate_shared, weighted_average
from fl_harness.client import LocalTraining, train_client
from fl_harness.metrics import evaluate_clients, rounds_to_target
from fl_harness.model import (
    MoEModel,
    build_client_model,
    count_parameters,
    expert_state,
    shared_state,
    split_state,
)
from flexassign.metrics import coefficient_of_variation

pytestmark = pytest.mark.torch


def _model(**kw) -> MoEModel:
    return MoEModel(in_features=6, num_classes=3, num_experts=4, hidden=8, expert_hidden=8,
                    generator=torch.Generator().manual_seed(0), **kw)


def _data(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 3, n)


# ------------------------------------------------------------------ aggregation
def test_aggregate_shared_is_the_sample_weighted_mean() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(0.0)}
    b = {"w": torch.tensor([4.0, -1.0]), "b": torch.tensor(3.0)}
    out = aggregate_shared([(a, 10), (b, 30)])
    # (10*[1,2] + 30*[4,-1]) / 40 = [3.25, -0.25]; (0*10 + 3*30)/40 = 2.25
    assert torch.allclose(out["w"], torch.tensor([3.25, -0.25]))
    assert torch.allclose(out["b"], torch.tensor(2.25))
    assert torch.equal(a["w"], torch.tensor([1.0, 2.0]))        # inputs untouched


def test_aggregate_shared_guards_zero_and_bad_weights() -> None:
    a = {"w": torch.tensor([1.0])}
    with pytest.raises(ValueError, match="total weight is zero"):
        aggregate_shared([(a, 0), (a, 0)])
    with pytest.raises(ValueError, match="must not be empty"):
        aggregate_shared([])
    with pytest.raises(ValueError, match="finite and >= 0"):
        aggregate_shared([(a, -1)])
    with pytest.raises(ValueError, match="keys"):
        weighted_average([a, {"v": torch.tensor([1.0])}], [1, 1])


def test_aggregate_experts_by_usage_and_untrained_keep_weights() -> None:
    cur = {0: {"w": torch.tensor([0.0])}, 1: {"w": torch.tensor([5.0])},
           2: {"w": torch.tensor([7.0])}}
    up = [
        ({0: {"w": torch.tensor([1.0])}, 2: {"w": torch.tensor([100.0])}}, {0: 3, 2: 0}),
        ({0: {"w": torch.tensor([5.0])}}, {0: 1}),
    ]
    out = aggregate_experts(cur, up)
    assert torch.allclose(out[0]["w"], torch.tensor([2.0]))    # (3*1 + 1*5) / 4
    assert torch.equal(out[1]["w"], torch.tensor([5.0]))       # nobody trained it
    assert torch.equal(out[2]["w"], torch.tensor([7.0]))       # trained, zero usage
    assert out[1]["w"] is not cur[1]["w"]                       # a copy
    with pytest.raises(ValueError, match="lacks"):
        aggregate_experts(cur, [({9: {"w": torch.tensor([1.0])}}, {9: 1})])
    with pytest.raises(ValueError, match="usage"):
        aggregate_experts(cur, [({0: {"w": torch.tensor([1.0])}}, {0: float("nan")})])


# ------------------------------------------------------------------ model
def test_state_dict_key_naming() -> None:
    m = _model()
    keys = list(m.state_dict())
    assert all(k.split(".")[0] in {"features", "experts", "head", "router"} for k in keys)
    assert {k.split(".")[1] for k in keys if k.startswith("experts.")} == {"0", "1", "2", "3"}
    shared, experts, router = split_state(m.state_dict())
    assert set(experts) == {0, 1, 2, 3} and set(router) == {"weight", "bias"}
    assert all(k.startswith(("features.", "head.")) for k in shared)


def test_expert_subset_deployment_limits_parameters() -> None:
    g = _model()
    c = build_client_model(g, [3, 1])
    assert c.held_experts == (1, 3)
    per_expert = count_parameters(g, "experts.0.")
    assert count_parameters(c, "experts.") == 2 * per_expert
    assert count_parameters(g) - count_parameters(c) == 2 * per_expert
    assert {k.split(".")[1] for k in c.state_dict() if k.startswith("experts.")} == {"1", "3"}
    assert torch.equal(c.state_dict()["experts.3.0.weight"], g.state_dict()["experts.3.0.weight"])
    # the router is restricted to held experts: gates are zero elsewhere by construction
    x = torch.randn(5, 6)
    g_c = c.gates(c.features(x))
    assert g_c.shape == (5, 2) and torch.allclose(g_c.sum(1), torch.ones(5))
    with pytest.raises(ValueError, match="not held"):
        build_client_model(c, [0])


def test_top_k_caps_at_held_experts() -> None:
    m = _model(top_k=2, experts=[2])
    out = m(torch.randn(4, 6))
    assert out.shape == (4, 3)
    assert torch.equal(m.gates(m.features(torch.randn(4, 6))), torch.ones(4, 1))


# ------------------------------------------------------------------ client
def test_client_update_carries_no_router_and_only_assigned_experts() -> None:
    g = _model()
    x, y = _data()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    res = train_client(client_id="c0", global_model=g, experts=[0, 2], x=x, y=y,
                       training=LocalTraining(epochs=1, batch_size=16, feedback="expert"),
                       generator=torch.Generator().manual_seed(0))
    u = res.update
    assert all(not k.startswith("router") for k in u.shared)
    assert set(u.expert_states) == {0, 2}
    assert not hasattr(u, "router_state")
    assert set(res.router_state) == {"weight", "bias"}
    # the router trained locally and the global model is untouched
    assert not torch.equal(res.router_state["weight"], before["router.weight"])
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in before.items())
    fb = u.feedback
    assert fb.experts == (0, 2) and sum(fb.counts) == 2 * len(y)   # top-2 of 2 held
    assert all(0 <= a <= 1 for a in fb.accuracy) and all(v >= 0 for v in fb.loss)
    assert u.expert_weights == {0: float(fb.counts[0]), 2: float(fb.counts[1])}


def test_client_training_is_deterministic_and_reuses_its_router() -> None:
    g = _model()
    x, y = _data()
    kw = dict(client_id="c", global_model=g, experts=[1, 3], x=x, y=y,
              training=LocalTraining(epochs=2, batch_size=8))
    a = train_client(**kw, generator=torch.Generator().manual_seed(5))
    b = train_client(**kw, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a.update.shared[k], b.update.shared[k]) for k in a.update.shared)
    c = train_client(**kw, generator=torch.Generator().manual_seed(5),
                     router_state=a.router_state)
    assert not torch.equal(c.router_state["weight"], a.router_state["weight"])


def test_training_reduces_loss() -> None:
    g = _model()
    x, y = _data(200)
    res = train_client(client_id="c", global_model=g, experts=[0, 1, 2, 3], x=x, y=y,
                       training=LocalTraining(epochs=1, batch_size=200, lr=0.01),
                       generator=torch.Generator().manual_seed(0))
    res2 = train_client(client_id="c", global_model=g, experts=[0, 1, 2, 3], x=x, y=y,
                        training=LocalTraining(epochs=30, batch_size=200, lr=0.01),
                        generator=torch.Generator().manual_seed(0))
    assert res2.update.train_loss < res.update.train_loss


# ------------------------------------------------------------------ metrics
def test_evaluate_clients_matches_the_client_model() -> None:
    g = _model()
    x, y = _data(30)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    res = train_client(client_id="c", global_model=g, experts=[1, 2], x=x, y=y,
                       training=LocalTraining(epochs=1), generator=torch.Generator().manual_seed(0))
    c = build_client_model(g, [1, 2], router_state=res.router_state)
    expected = float((c(xt).argmax(1) == yt).float().mean())
    acc = evaluate_clients(g, [res.router_state], [(1, 2)], (xt, yt))
    assert acc[0] == pytest.approx(expected)
    per = evaluate_clients(g, [res.router_state] * 2, [(1, 2)] * 2,
                           [(xt, yt), (xt[:0], yt[:0])])
    assert per[0] == pytest.approx(expected) and np.isnan(per[1])


def test_cv_and_rounds_to_target() -> None:
    assert coefficient_of_variation([3, 3, 3]) == 0.0
    assert np.isnan(coefficient_of_variation([0, 0]))   # the one CV: NaN when nothing trained
    assert coefficient_of_variation([1, 3]) == pytest.approx(0.5)
    assert rounds_to_target([0.1, float("nan"), 0.5, 0.7], 0.5) == 3
    assert rounds_to_target([0.1], 0.5) is None and rounds_to_target([0.9], None) is None


def test_shared_and_expert_state_are_copies() -> None:
    m = _model()
    s = shared_state(m)
    e = expert_state(m)
    s["head.weight"].zero_()
    e[0]["0.weight"].zero_()
    assert m.head.weight.abs().sum() > 0 and m.experts["0"][0].weight.abs().sum() > 0


def test_feedback_counts_routed_samples_and_nan_where_unused() -> None:
    from fl_harness.client import expert_feedback
    from flexassign.alignment import Feedback

    g = _model(top_k=1)
    router = {k: v.clone() for k, v in g.router.state_dict().items()}
    router["weight"].zero_()
    router["bias"] = torch.tensor([0.0, 0.0, 9.0, 0.0])      # everything goes to expert 2
    c = build_client_model(g, [0, 2, 3], router_state=router)
    x, y = _data(25)
    fb, usage = expert_feedback(c, torch.from_numpy(x), torch.from_numpy(y), kind="expert")
    assert usage == (0, 25, 0)
    assert fb.experts == (0, 2, 3) and fb.counts == (0, 25, 0)
    assert np.isnan(fb.accuracy[0]) and np.isnan(fb.loss[2]) and 0 <= fb.accuracy[1] <= 1
    # the planner's Feedback contract accepts NaN exactly where the count is 0
    Feedback(experts=fb.experts, counts=fb.counts, accuracy=fb.accuracy, loss=fb.loss)


def test_grad_clip_bounds_the_step() -> None:
    g = _model()
    x, y = _data(64)
    kw = dict(client_id="c", global_model=g, experts=[0, 1], x=x, y=y,
              generator=torch.Generator().manual_seed(0))
    clipped = train_client(**kw, training=LocalTraining(epochs=1, batch_size=64, lr=1.0,
                                                        momentum=0.0, grad_clip=1e-3))
    w0 = g.state_dict()["head.weight"]
    # one SGD step of lr 1 with gradient norm <= 1e-3 moves every parameter by <= 1e-3
    assert float((clipped.update.shared["head.weight"] - w0).norm()) <= 1e-3 + 1e-6
