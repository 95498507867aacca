"""The pruning engine with real torch-pruning: groups, ratio vectors checked channel by channel, criteria, guards.

Independent checks: expected channel counts are computed here from the guard rules, the L2 ranking is
recomputed here from the weights, and pruned weights are compared with slices of the original weights.
"""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch_pruning as tp
from torch import nn

from autoprune.errors import PruningError
from autoprune.models import build_model
from autoprune.pruning import CRITERIA
from autoprune.pruning import GuardSettings
from autoprune.pruning import Pruner
from autoprune.pruning import kept_channels
from autoprune.pruning import make_criterion
from autoprune.pruning import max_ratio
from autoprune.pruning import min_keep
from autoprune.trial.pruning_setup import make_pruner

X = torch.zeros(1, 1, 16, 16)
TINY_WIDTHS = [16, 32, 32]
# No floor and no rounding: every requested count is applied as asked.
FREE = GuardSettings(min_channels=1, min_fraction=0.0, first_layer_max_ratio=0.5, round_to=1)


def _resnet(seed: int = 0, **options) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("resnet", num_classes=10, in_channels=1, **({"widths": TINY_WIDTHS} | options))


def _mobilenet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mobilenet", num_classes=10, in_channels=1)


def _members(group) -> dict[str, str]:
    """``{module name: "out" | "in"}`` of a group's member strings ``"name (prune_out_channels)"``."""
    out = {}
    for text in group.members:
        name, handler = re.fullmatch(r"(\S+) \((\w+)\)", text).groups()
        out[name] = "out" if "out" in handler else "in"
    return out


# Groups -----------------------------------------------------------------------------------------------

def test_resnet_residual_chain_is_one_group() -> None:
    model = _resnet(blocks_per_stage=2)
    groups = Pruner(X, guards=FREE).groups(model)
    by_name = {g.name: g for g in groups}
    assert [(g.name, g.channels) for g in groups] == [
        ("stem.0", 16), ("layers.0.conv1", 16), ("layers.1.conv1", 16),
        ("layers.2.conv1", 32), ("layers.2.conv2", 32), ("layers.3.conv1", 32),
        ("layers.4.conv1", 32), ("layers.4.conv2", 32), ("layers.5.conv1", 32),
    ]
    # The stem and both block outputs of stage 1 are added together: one group, named after the stem.
    stem = _members(by_name["stem.0"])
    for out in ("stem.0", "stem.1", "layers.0.conv2", "layers.0.bn2", "layers.1.conv2", "layers.1.bn2"):
        assert stem[out] == "out", out
    for consumer in ("layers.0.conv1", "layers.1.conv1", "layers.2.conv1", "layers.2.downsample.0"):
        assert stem[consumer] == "in", consumer
    # Stage 2: the projection shortcut and both block outputs are one group too.
    stage2 = _members(by_name["layers.2.conv2"])
    for out in ("layers.2.downsample.0", "layers.2.downsample.1", "layers.2.conv2", "layers.3.conv2", "layers.3.bn2"):
        assert stage2[out] == "out", out
    # Inside a block, conv1's outputs are coupled only with its BN and conv2's input.
    assert _members(by_name["layers.3.conv1"]) == {"layers.3.conv1": "out", "layers.3.bn1": "out", "layers.3.conv2": "in"}
    # The classifier is never pruned; its input shrinks with the last residual group.
    assert "fc" not in by_name and _members(by_name["layers.4.conv2"])["fc"] == "in"
    assert [g.name for g in groups if g.first_layer] == ["stem.0"]
    for g in groups:
        assert g.channels == model.get_submodule(g.name).out_channels


def test_resnet_tiny_groups_and_fc_input(tiny_base_model: nn.Module) -> None:
    groups = Pruner(X, guards=FREE).groups(tiny_base_model)
    assert [(g.name, g.channels) for g in groups] == [
        ("stem.0", 16), ("layers.0.conv1", 16), ("layers.1.conv1", 32),
        ("layers.1.conv2", 32), ("layers.2.conv1", 32), ("layers.2.conv2", 32),
    ]
    assert _members(groups[0]) == {
        "stem.0": "out", "stem.1": "out", "layers.0.conv2": "out", "layers.0.bn2": "out",
        "layers.0.conv1": "in", "layers.1.conv1": "in", "layers.1.downsample.0": "in",
    }
    assert _members(groups[-1])["fc"] == "in"
    assert "fc" not in {g.name for g in groups}


def test_mobilenet_depthwise_chain_is_one_group() -> None:
    model = _mobilenet()
    groups = Pruner(X, guards=FREE).groups(model)
    by_name = {g.name: g for g in groups}
    assert len(groups) == 11
    # Every block with an expansion: 1x1 expand conv + BN, 3x3 depthwise conv + BN, project conv input.
    expanded = [i for i, block in enumerate(model.features) if hasattr(block, "conv") and len(block.conv) == 3]
    assert expanded == [2, 3, 4, 5, 6]
    for i in expanded:
        g = by_name[f"features.{i}.conv.0.0"]
        assert _members(g) == {
            f"features.{i}.conv.0.0": "out", f"features.{i}.conv.0.1": "out",
            f"features.{i}.conv.1.0": "out", f"features.{i}.conv.1.1": "out",
            f"features.{i}.conv.2.0": "in",
        }
        assert model.features[i].conv[1][0].groups == g.channels  # really depthwise
    # Without expansion the depthwise conv follows the stem: stem conv + BN + depthwise conv + BN.
    stem = _members(by_name["features.0.0"])
    assert stem == {
        "features.0.0": "out", "features.0.1": "out", "features.1.conv.0.0": "out",
        "features.1.conv.0.1": "out", "features.1.conv.1.0": "in",
    }
    assert by_name["features.0.0"].first_layer and sum(g.first_layer for g in groups) == 1
    # Residual adds couple the project convs of consecutive blocks of one stage.
    proj = _members(by_name["features.2.conv.2.0"])
    assert proj["features.2.conv.2.0"] == "out" and proj["features.3.conv.2.0"] == "out"
    assert _members(by_name["features.7.0"])["classifier"] == "in"


@pytest.mark.parametrize("builder", [_resnet, _mobilenet], ids=["resnet", "mobilenet"])
def test_group_names_are_stable_across_fresh_builds(builder) -> None:
    a = Pruner(X, guards=FREE).groups(builder(seed=0))
    b = Pruner(X, guards=FREE).groups(builder(seed=123))
    assert [g.as_dict() for g in a] == [g.as_dict() for g in b]
    assert len({g.name for g in a}) == len(a)


def test_group_limits_follow_the_guards() -> None:
    guards = GuardSettings(min_channels=8, min_fraction=0.1, first_layer_max_ratio=0.5, round_to=8)
    for g in Pruner(X, guards=guards).groups(_mobilenet()):
        assert g.max_ratio == max_ratio(g.channels, guards, g.first_layer)
        keep = round(g.channels * (1 - g.max_ratio))
        assert keep % 8 == 0 and keep >= max(8, math.ceil(0.1 * g.channels))
    stem = Pruner(X, guards=guards).groups(_mobilenet())[0]
    assert stem.first_layer and stem.max_ratio == 0.5


# Ratio vectors, channel by channel --------------------------------------------------------------------

def _expected_keep(channels: int, ratio: float, round_to: int) -> int:
    keep = int(channels * (1 - ratio) + 1e-4)
    return keep if keep == channels else keep // round_to * round_to


def _l2_scores(model: nn.Module, groups, k: int, kept: dict[str, list[int]]) -> torch.Tensor:
    """Group L2 score per channel of ``groups[k]``, recomputed from the base weights.

    The engine scores every group on the unpruned model before pruning any (so a ratio vector selects the
    same channels in every mode, whatever the group order).
    """
    group = groups[k]
    done: set[str] = set()
    out_of, in_of = _out_in_groups(groups)
    score = torch.zeros(group.channels)
    for name, kind in _members(group).items():
        m = model.get_submodule(name)
        w = m.weight.detach()
        if isinstance(m, nn.BatchNorm2d):
            score += w**2
            continue
        if kind == "out":
            if in_of.get(name) in done:
                w = w[:, kept[in_of[name]]]
            score += (w**2).flatten(1).sum(1)
        else:
            if out_of.get(name) in done:
                w = w[kept[out_of[name]]]
            score += (w**2).transpose(0, 1).flatten(1).sum(1)
    return score


def _out_in_groups(groups) -> tuple[dict[str, str], dict[str, str]]:
    out_of, in_of = {}, {}
    for g in groups:
        for name, kind in _members(g).items():
            (out_of if kind == "out" else in_of)[name] = g.name
    return out_of, in_of


@pytest.mark.parametrize("round_to", [1, 8])
def test_ratio_vector_channel_by_channel(tiny_base_model: nn.Module, round_to: int) -> None:
    guards = GuardSettings(min_channels=1, min_fraction=0.0, first_layer_max_ratio=0.5, round_to=round_to)
    pruner = Pruner(X, criterion="l2", guards=guards)
    base = tiny_base_model
    groups = pruner.groups(base)
    ratios = {"stem.0": 0.5, "layers.0.conv1": 0.3, "layers.1.conv1": 0.6, "layers.1.conv2": 0.25, "layers.2.conv1": 0.1}
    expected = {g.name: _expected_keep(g.channels, ratios.get(g.name, 0.0), round_to) for g in groups}
    assert expected["layers.2.conv2"] == 32  # not named: untouched

    model = copy.deepcopy(base)
    result = pruner.prune(model, ratios=ratios)
    assert result.model is model and result.clamps == []
    assert result.kept == expected
    assert result.ratios == pytest.approx({g.name: 1 - expected[g.name] / g.channels for g in groups})
    assert result.requested == {g.name: ratios.get(g.name, 0.0) for g in groups}

    # Kept indices are the top-scored channels by the group L2 norm, recomputed here.
    for k, g in enumerate(groups):
        scores = _l2_scores(base, groups, k, result.kept_indices)
        top = sorted(torch.argsort(scores, descending=True)[: expected[g.name]].tolist())
        assert result.kept_indices[g.name] == top, g.name

    # Every conv, BN and the classifier hold exactly the kept slices of the base weights.
    out_of, in_of = _out_in_groups(groups)
    pruned = dict(model.named_modules())
    for name, m in base.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            continue
        out_idx = result.kept_indices[out_of[name]] if name in out_of else list(range(m.weight.shape[0]))
        p = pruned[name]
        if isinstance(m, nn.BatchNorm2d):
            for attr in ("weight", "bias", "running_mean", "running_var"):
                assert torch.equal(getattr(p, attr), getattr(m, attr)[out_idx]), (name, attr)
            continue
        in_idx = result.kept_indices[in_of[name]] if name in in_of else list(range(m.weight.shape[1]))
        assert p.weight.shape[0] == len(out_idx) and p.weight.shape[1] == len(in_idx), name
        assert torch.equal(p.weight, m.weight[out_idx][:, in_idx]), name
        if isinstance(m, nn.Conv2d):
            assert (p.out_channels, p.in_channels) == (len(out_idx), len(in_idx))
    assert model(torch.randn(3, 1, 16, 16)).shape == (3, 10)
    base_macs, base_params = tp.utils.count_ops_and_params(base, X)
    assert result.macs < base_macs and result.params < base_params


def test_uniform_ratio_on_mobilenet_matches_the_guard_arithmetic() -> None:
    guards = GuardSettings(min_channels=8, min_fraction=0.1, first_layer_max_ratio=0.5, round_to=8)
    pruner = Pruner(X, guards=guards)
    model = _mobilenet()
    groups = pruner.groups(model)
    result = pruner.prune(model, uniform=0.4)
    for g in groups:
        assert result.kept[g.name] == kept_channels(g.name, g.channels, 0.4, guards, g.first_layer)[0]
        assert result.kept[g.name] % 8 == 0
    # Depthwise convs shrink together with their expand conv (groups == channels == kept).
    for i in (2, 3, 4, 5, 6):
        dw = model.features[i].conv[1][0]
        assert dw.groups == dw.in_channels == dw.out_channels == result.kept[f"features.{i}.conv.0.0"]
        assert model.features[i].conv[2][0].in_channels == dw.out_channels
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_global_ratio_ranks_every_channel_together(tiny_base_model: nn.Module) -> None:
    pruner = Pruner(X, guards=FREE)
    groups = pruner.groups(tiny_base_model)
    total = sum(g.channels for g in groups)
    result = pruner.prune(copy.deepcopy(tiny_base_model), global_ratio=0.3)
    assert result.clamps == []
    assert total - sum(result.kept.values()) == int(total * 0.3)
    assert len(set(round(r, 3) for r in result.ratios.values())) > 1  # not a uniform prune
    assert result.requested == pytest.approx(result.ratios)
    # Recomputed here: every group's L2 scores divided by their mean, the lowest 30% of all channels go.
    ranked = []
    for g in groups:
        scores = _l2_scores(tiny_base_model, [g], 0, {})
        ranked += [(float(v), g.name, c) for c, v in enumerate(scores / scores.mean())]
    dropped = sorted(ranked)[: int(total * 0.3)]
    for g in groups:
        gone = {c for _, name, c in dropped if name == g.name}
        assert result.kept_indices[g.name] == [c for c in range(g.channels) if c not in gone], g.name


def test_iterative_steps_reach_the_same_counts(tiny_base_model: nn.Module) -> None:
    guards = GuardSettings(min_channels=1, min_fraction=0.0, round_to=8)
    one = Pruner(X, guards=guards).prune(copy.deepcopy(tiny_base_model), uniform=0.5)
    three = Pruner(X, guards=guards, iterative_steps=3).prune(copy.deepcopy(tiny_base_model), uniform=0.5)
    assert one.kept == three.kept
    for name, idx in three.kept_indices.items():
        assert len(idx) == three.kept[name] and idx == sorted(set(idx))


def test_bad_requests_are_refused_with_the_group_name(tiny_base_model: nn.Module) -> None:
    pruner = Pruner(X, guards=FREE)
    model = copy.deepcopy(tiny_base_model)
    with pytest.raises(PruningError, match=r"unknown group\(s\) layers\.9\.conv1; the model's groups are: stem\.0"):
        pruner.prune(model, ratios={"layers.9.conv1": 0.5})
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(PruningError, match="group layers.1.conv1: ratio must be in"):
            pruner.prune(model, ratios={"layers.1.conv1": bad})
    with pytest.raises(PruningError, match="exactly one of"):
        pruner.prune(model, uniform=0.2, global_ratio=0.2)
    with pytest.raises(PruningError, match="uniform ratio must be in"):
        pruner.prune(model, uniform=1.0)
    with pytest.raises(PruningError, match="iterative_steps"):
        Pruner(X, iterative_steps=9)
    with pytest.raises(PruningError, match="unknown criterion 'l3'"):
        make_criterion("l3")
    assert [m.weight.shape for m in model.modules() if isinstance(m, nn.Conv2d)] == [
        m.weight.shape for m in tiny_base_model.modules() if isinstance(m, nn.Conv2d)
    ]


def test_ties_make_followers_take_the_leader_ratio(tiny_base_model: nn.Module) -> None:
    pruner = Pruner(X, guards=FREE, ties=lambda m: [("layers.1.conv1", "layers.2.conv1")])
    assert {g.name: g.tied_to for g in pruner.groups(tiny_base_model)}["layers.2.conv1"] == "layers.1.conv1"
    result = pruner.prune(copy.deepcopy(tiny_base_model), ratios={"layers.1.conv1": 0.5, "layers.2.conv1": 0.1})
    assert result.kept["layers.1.conv1"] == result.kept["layers.2.conv1"] == 16
    bad = Pruner(X, ties=lambda m: [("layers.1.conv1", "nope")])
    with pytest.raises(PruningError, match="group tie names 'nope'"):
        bad.groups(tiny_base_model)


# Criteria ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("criterion", list(CRITERIA))
def test_every_criterion_prunes_by_its_scores(tiny_config, tiny_task, tiny_base_model: nn.Module, criterion: str) -> None:
    tiny_config.criterion = criterion
    pruner = make_pruner(tiny_config, tiny_task)
    model = copy.deepcopy(tiny_base_model)
    groups = pruner.groups(model)
    with tiny_task.forbid_split("test"):
        result = pruner.prune(model, uniform=0.5)
    for g in groups:
        assert result.kept[g.name] == kept_channels(g.name, g.channels, 0.5, pruner.guards, g.first_layer)[0]
        assert result.kept[g.name] < g.channels
    # Constant scores would keep the last channels (stable sort drops the first): the choice must vary.
    chosen_by_scores = [g.name for g in groups if result.kept_indices[g.name] != list(range(g.channels - result.kept[g.name], g.channels))]
    assert len(chosen_by_scores) >= len(groups) - 1, chosen_by_scores
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    assert all(p.grad is None for p in model.parameters())  # no gradient left behind
    if criterion in ("taylor", "hessian"):
        assert tiny_task.access_counts["train"] >= 1


@pytest.mark.parametrize("criterion", ["l2", "taylor"])
def test_cached_scores_prune_exactly_as_fresh_ones(tiny_config, tiny_task, tiny_base_model: nn.Module, criterion: str) -> None:
    """The unpruned model's scores, kept per source, choose the same channels as scoring every copy afresh."""
    tiny_config.criterion = criterion
    cached, fresh = make_pruner(tiny_config, tiny_task), make_pruner(tiny_config, tiny_task)
    fresh.reuse_scores = False
    plans = [{"uniform": 0.5}, {"global_ratio": 0.4}, {"uniform": 0.25}, {"global_ratio": 0.4}]
    with tiny_task.forbid_split("test"):
        for plan in plans:
            a = cached.prune(copy.deepcopy(tiny_base_model), source="base", **plan)
            reads = tiny_task.access_counts.get("train", 0)
            b = fresh.prune(copy.deepcopy(tiny_base_model), source="base", **plan)
            assert a.kept_indices == b.kept_indices and a.requested == b.requested
            x = torch.randn(2, 1, 16, 16)
            assert torch.equal(a.model.eval()(x), b.model.eval()(x))
            if criterion == "taylor":
                assert tiny_task.access_counts["train"] > reads  # the fresh pruner read data again
    assert (cached.score_hits, fresh.score_hits) == (len(plans) - 1, 0)
    # Another source (other weights) is scored afresh, never served the first source's scores.
    other = copy.deepcopy(tiny_base_model)
    with torch.no_grad():
        for param in other.parameters():
            param.mul_(torch.rand_like(param))
    with tiny_task.forbid_split("test"):
        c = cached.prune(copy.deepcopy(other), source="other", uniform=0.5)
        d = fresh.prune(copy.deepcopy(other), uniform=0.5)
    assert cached.score_hits == len(plans) - 1 and c.kept_indices == d.kept_indices


@pytest.mark.parametrize("criterion", ["taylor", "hessian"])
def test_data_criteria_without_data_are_refused(tiny_base_model: nn.Module, criterion: str) -> None:
    assert make_criterion(criterion).needs_data
    with pytest.raises(PruningError, match=f"criterion '{criterion}' needs training data"):
        Pruner(X, criterion=criterion).prune(copy.deepcopy(tiny_base_model), uniform=0.5)
    crit = make_criterion(criterion)
    with pytest.raises(PruningError, match="got none"):
        crit.prepare(tiny_base_model, [], lambda m, x, y: m(x).sum())


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


def _batches(task, n: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = task.loader("train", size, shuffle=True, seed=0)
    return [b for _, b in zip(range(n), loader, strict=False)]


def test_hessian_averages_every_sample(tiny_task, tiny_base_model: nn.Module) -> None:
    model = tiny_base_model.eval()
    batches = _batches(tiny_task, 2, 4)
    param = model.layers[1].conv1.weight
    # Independent OBD diagonal: mean over the 8 samples of the squared per-sample gradient.
    squares = []
    for x, y in batches:
        for i in range(x.shape[0]):
            model.zero_grad(set_to_none=True)
            _loss(model, x[i : i + 1], y[i : i + 1]).backward()
            squares.append(param.grad.detach() ** 2)
    expected = torch.stack(squares).mean(0)

    crit = make_criterion("hessian")
    crit.prepare(model, batches, _loss)
    assert torch.allclose(param.grad, expected, rtol=1e-5, atol=1e-12)
    assert not torch.allclose(param.grad, squares[-1])  # not torch-pruning 1.6.1's last-sample-only
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=X)
    group = graph.get_pruning_group(model.layers[1].conv1, tp.prune_conv_out_channels, idxs=list(range(32)))
    many = crit(group)

    last_x, last_y = batches[-1][0][-1:], batches[-1][1][-1:]
    one = make_criterion("hessian")
    one.prepare(model, [(last_x, last_y)], _loss)
    assert torch.allclose(param.grad, squares[-1])
    single = one(group)
    assert not torch.allclose(many, single, rtol=1e-3)
    assert torch.argsort(many).tolist() != torch.argsort(single).tolist()
    model.zero_grad(set_to_none=True)


def test_hessian_stops_at_max_samples(tiny_task, tiny_base_model: nn.Module) -> None:
    crit = make_criterion("hessian")
    crit.max_samples = 3
    calls = []

    def counting_loss(model, x, y):
        calls.append(x.shape[0])
        return _loss(model, x, y)

    crit.prepare(tiny_base_model, _batches(tiny_task, 2, 4), counting_loss)
    assert calls == [1, 1, 1]
    tiny_base_model.zero_grad(set_to_none=True)


def test_taylor_accumulates_gradients_over_batches(tiny_task, tiny_base_model: nn.Module) -> None:
    model = tiny_base_model.eval()
    batches = _batches(tiny_task, 3, 16)
    param = model.layers[2].conv2.weight
    expected = torch.zeros_like(param)
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        _loss(model, x, y).backward()
        expected += param.grad
    crit = make_criterion("taylor")
    crit.prepare(model, batches, _loss)
    assert torch.allclose(param.grad, expected, atol=1e-6)
    model.zero_grad(set_to_none=True)


def test_random_criterion_is_seeded(tiny_base_model: nn.Module) -> None:
    def kept(seed: int) -> dict[str, list[int]]:
        return Pruner(X, criterion="random", guards=FREE, seed=seed).prune(copy.deepcopy(tiny_base_model), uniform=0.5).kept_indices

    assert kept(1) == kept(1)
    assert kept(1) != kept(2)
    state = torch.random.get_rng_state()
    kept(3)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left alone


# Guards and clamps ------------------------------------------------------------------------------------

def test_clamp_a_ratio_that_would_leave_no_channel(tiny_base_model: nn.Module) -> None:
    result = Pruner(X, guards=FREE).prune(copy.deepcopy(tiny_base_model), ratios={"layers.1.conv1": 0.99})
    assert result.kept["layers.1.conv1"] == 1
    (clamp,) = result.clamps
    assert (clamp.group, clamp.requested_ratio, clamp.requested_channels, clamp.applied_channels) == ("layers.1.conv1", 0.99, 0, 1)
    assert "would remove every channel" in clamp.reason and "layers.1.conv1" in str(clamp)


def test_clamp_when_rounding_would_leave_no_channel(tiny_base_model: nn.Module) -> None:
    guards = GuardSettings(min_channels=1, min_fraction=0.0, round_to=8)
    result = Pruner(X, guards=guards).prune(copy.deepcopy(tiny_base_model), ratios={"layers.1.conv1": 0.8})
    assert result.kept["layers.1.conv1"] == 8
    (clamp,) = result.clamps
    assert clamp.requested_channels == 6 and "round_to=8" in clamp.reason


def test_clamp_a_group_below_the_floor(tiny_base_model: nn.Module) -> None:
    guards = GuardSettings(min_channels=8, min_fraction=0.1, round_to=1)
    result = Pruner(X, guards=guards).prune(copy.deepcopy(tiny_base_model), ratios={"layers.2.conv1": 0.9, "layers.1.conv1": 0.7})
    assert result.kept["layers.2.conv1"] == 8 and result.kept["layers.1.conv1"] == 9
    (clamp,) = result.clamps
    assert clamp.group == "layers.2.conv1" and clamp.requested_channels == 3 and clamp.applied_channels == 8
    assert "below the floor of 8 channels" in clamp.reason


def test_clamp_the_first_layer_beyond_its_limit(tiny_base_model: nn.Module) -> None:
    guards = GuardSettings(min_channels=1, min_fraction=0.0, first_layer_max_ratio=0.5, round_to=1)
    result = Pruner(X, guards=guards).prune(copy.deepcopy(tiny_base_model), ratios={"stem.0": 0.75, "layers.0.conv1": 0.75})
    assert result.kept["stem.0"] == 8 and result.kept["layers.0.conv1"] == 4
    (clamp,) = result.clamps
    assert clamp.group == "stem.0" and clamp.requested_channels == 4 and clamp.applied_channels == 8
    assert "first layer keeps at least 50%" in clamp.reason


def test_clamp_a_global_prune_that_would_empty_a_group(tiny_base_model: nn.Module) -> None:
    guards = GuardSettings(min_channels=8, min_fraction=0.1, first_layer_max_ratio=0.5, round_to=1)
    pruner = Pruner(X, guards=guards)
    groups = pruner.groups(tiny_base_model)
    result = pruner.prune(copy.deepcopy(tiny_base_model), global_ratio=0.8)
    assert result.clamps
    for g in groups:
        assert result.kept[g.name] >= min_keep(g.channels, guards, g.first_layer), g.name
    for c in result.clamps:
        assert c.requested_channels < c.applied_channels == result.kept[c.group]
        assert c.requested_ratio == pytest.approx(1 - c.requested_channels / next(g.channels for g in groups if g.name == c.group))


@pytest.mark.parametrize(
    ("channels", "ratio", "settings", "first", "keep", "clamped"),
    [
        (32, 0.0, GuardSettings(round_to=8), False, 32, False),
        (24, 0.0, GuardSettings(round_to=16), False, 24, False),  # untouched groups are not rounded
        (24, 0.2, GuardSettings(round_to=16), False, 16, False),
        (32, 0.7, GuardSettings(round_to=16), False, 16, True),  # 9 rounds to 0: clamped to one block
        (64, 0.5, GuardSettings(round_to=8), False, 32, False),
        (64, 0.95, GuardSettings(min_channels=8, min_fraction=0.25, round_to=1), False, 16, True),
        (16, 0.75, GuardSettings(first_layer_max_ratio=0.5, min_channels=1, round_to=1), True, 8, True),
        (10, 0.5, GuardSettings(first_layer_max_ratio=0.3, min_channels=1, round_to=1), True, 7, True),
        (4, 0.0, GuardSettings(round_to=8), False, 4, False),
        (32, 1.0, GuardSettings(round_to=1), False, 8, True),
    ],
)
def test_kept_channels_arithmetic(channels, ratio, settings, first, keep, clamped) -> None:
    got, clamp = kept_channels("g", channels, ratio, settings, first)
    assert got == keep
    assert (clamp is not None) == clamped
    assert got >= min_keep(channels, settings, first)
    # Never beyond the limit the search is bounded by.
    assert 1 - got / channels <= max_ratio(channels, settings, first) + 1e-9
