"""Segformer pruning: random ratio vectors, attention heads, sr-conv ties, ONNX export, replay by index.

Uses a tiny Segformer geometry (built from a SegformerConfig, no download) on 32x32 inputs.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

from autoprune.errors import PruningError  # noqa: E402
from autoprune.models import build_model  # noqa: E402
from autoprune.models.segformer import attention_modules  # noqa: E402
from autoprune.models.segformer import patch_attention  # noqa: E402
from autoprune.models.segformer import segformer_num_heads  # noqa: E402
from autoprune.models.segformer import segformer_ties  # noqa: E402
from autoprune.pruning import GuardSettings  # noqa: E402
from autoprune.pruning import Pruner  # noqa: E402
from autoprune.pruning.engine import head_layout  # noqa: E402
from autoprune.pruning.engine import head_plan  # noqa: E402

# Odd head widths on purpose (stage 2: 3 heads of 8; stage 3: 4 heads of 8), so head arithmetic is exercised.
TINY = {"preset": "tiny", "hidden_sizes": [16, 24, 24, 32], "num_attention_heads": [1, 2, 3, 4], "decoder_hidden_size": 32}
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def tiny_segformer(seed: int = 0, num_classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("segformer", num_classes=num_classes, in_channels=3, **TINY)
    for module in model.modules():  # non-trivial BN statistics, so replay errors show in the outputs
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def make_pruner(criterion: str = "l2", guards: GuardSettings | None = None, **kwargs) -> Pruner:
    return Pruner(
        X[:1],
        criterion=criterion,
        guards=guards or GuardSettings(min_channels=2, min_fraction=0.1, first_layer_max_ratio=0.5, round_to=1),
        ignored_layers=lambda m: [m.decode_head.classifier],
        ties=segformer_ties,
        output_transform=lambda out: out.sum(),
        num_heads=segformer_num_heads,
        after_pruning=patch_attention,
        **kwargs,
    )


def check_attention(model: nn.Module, heads: dict[str, int] | None = None) -> None:
    """Every attention module's head attributes fit its projections; sr convs keep their input width."""
    names = {m: n for n, m in model.named_modules()}
    for att in attention_modules(model):
        mod = att.module
        width = att.q.out_features
        assert att.k.out_features == att.v.out_features == width
        assert mod.o_proj.in_features == width
        assert mod.num_attention_heads * mod.head_dim == width
        if heads is not None:
            assert heads[names[att.q]] == mod.num_attention_heads
        if att.sr is not None:
            assert att.sr.out_channels == att.sr.in_channels == att.q.in_features


def test_groups_cover_ffn_attention_decoder_and_tie_the_sr_convs() -> None:
    groups = make_pruner().groups(tiny_segformer())
    by_name = {g.name: g for g in groups}
    assert "segformer.stages.0.blocks.0.mlp.fc1" in by_name  # Mix-FFN hidden channels
    attention = [g for g in groups if g.heads is not None]
    assert [g.heads for g in attention] == [1, 2, 3, 4]
    assert "decode_head.linear_fuse" in by_name and "decode_head.linear_projections.0.proj" in by_name
    assert "decode_head.classifier" not in by_name
    ties = {g.name: g.tied_to for g in groups if g.tied_to}
    assert ties == {
        f"segformer.stages.{i}.blocks.0.attention.sequence_reduction.sequence_reduction": f"segformer.stages.{i}.patch_embeddings.proj"
        for i in range(3)  # the last stage has sr_ratio 1: no sr conv
    }


def test_mit_b0_geometry_has_31_groups() -> None:
    model = build_model("segformer", num_classes=2, in_channels=3)
    groups = make_pruner().groups(model)
    assert len(groups) == 31
    assert sorted({g.heads for g in groups if g.heads}) == [1, 2, 5, 8]
    assert sum(1 for g in groups if g.tied_to) == 6


def test_head_plan_removes_whole_heads_first() -> None:
    assert head_plan(128, 128, 8, 8, 16) == (8, 16)
    assert head_plan(64, 128, 8, 8, 16) == (4, 16)
    assert head_plan(40, 128, 8, 8, 16) == (3, 14)
    assert head_plan(120, 128, 8, 8, 16) == (8, 15)
    assert head_plan(5, 16, 1, 1, 16) == (1, 5)  # a single head only narrows
    assert head_plan(64, 128, 8, 3, 10) == (3, 10)  # iterative steps never bring channels back
    assert head_layout([0, 1, 8, 9], 16, 2) == (2, 2)
    with pytest.raises(PruningError, match="same number"):
        head_layout([0, 1, 8], 16, 2, "g")


def test_random_ratio_vectors_never_break_the_forward_pass() -> None:
    base = tiny_segformer()
    rng = random.Random(0)
    criteria = ["l2", "random", "l1"]
    for i in range(20):
        pruner = make_pruner(criteria[i % 3], seed=i)
        groups = pruner.groups(base)
        ratios = {g.name: rng.uniform(0.0, g.max_ratio) for g in groups if g.tied_to is None}
        model = copy.deepcopy(base)
        result = pruner.prune(model, ratios=ratios)
        out = model(X)
        assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
        check_attention(model, result.heads)
        for g in groups:
            assert result.kept[g.name] >= 1
            if g.heads is not None:
                kept_heads, width = head_layout(result.kept_indices[g.name], g.channels, g.heads, g.name)
                assert kept_heads * width == result.kept[g.name]


def test_first_layer_clamp_carries_over_to_the_tied_sr_conv() -> None:
    model = tiny_segformer()
    pruner = make_pruner()
    result = pruner.prune(model, ratios={"segformer.stages.0.patch_embeddings.proj": 0.9})
    assert result.kept["segformer.stages.0.patch_embeddings.proj"] == 8  # first layer keeps half of 16
    assert result.kept["segformer.stages.0.blocks.0.attention.sequence_reduction.sequence_reduction"] == 8
    assert any(c.group == "segformer.stages.0.patch_embeddings.proj" for c in result.clamps)
    check_attention(model, result.heads)
    model(X)


def test_whole_heads_and_head_widths_are_pruned_and_patched() -> None:
    model = tiny_segformer()
    name = "segformer.stages.3.blocks.0.attention.q_proj"  # 4 heads of 8
    result = make_pruner().prune(model, ratios={name: 0.5, "segformer.stages.2.blocks.0.attention.q_proj": 0.2})
    att = model.segformer.stages[3].blocks[0].attention
    assert (att.num_attention_heads, att.head_dim) == (2, 8)
    assert result.heads[name] == 2
    att2 = model.segformer.stages[2].blocks[0].attention  # 3 heads of 8, keep >= 20 of 24: all heads, narrower
    assert (att2.num_attention_heads, att2.head_dim) == (3, 7)
    assert att.scaling == pytest.approx(8**-0.5) and att2.scaling == pytest.approx(8**-0.5)  # trained scale kept
    model(X)


def test_taylor_criterion_prunes_a_segformer() -> None:
    base = tiny_segformer()
    y = torch.randint(0, 3, (2, 32, 32), generator=torch.Generator().manual_seed(1))
    pruner = make_pruner(
        "taylor",
        batches=lambda: iter([(X, y)]),
        loss_fn=lambda m, a, b: nn.functional.cross_entropy(m(a), b),
        iterative_steps=2,
    )
    model = copy.deepcopy(base)
    result = pruner.prune(model, uniform=0.4)
    check_attention(model, result.heads)
    assert model(X).shape == (2, 3, 32, 32)


def test_pruned_segformer_exports_to_onnx_and_is_timed(tmp_path: Path) -> None:
    from autoprune.latency import LatencySettings
    from autoprune.latency import compare_outputs
    from autoprune.latency import export_onnx
    from autoprune.latency import measure_speedup

    base = tiny_segformer()
    model = copy.deepcopy(base)
    make_pruner(guards=GuardSettings(round_to=8)).prune(model, uniform=0.5)
    base_onnx = export_onnx(base, X[:1], tmp_path / "base.onnx")
    onnx_path = export_onnx(model, X[:1], tmp_path / "pruned.onnx")
    assert compare_outputs(model, onnx_path, X) < 1e-3
    settings = LatencySettings(batch_size=2, repeats=20, warmup=2, blocks=2, cv_threshold=1.0, max_remeasure=0, lock=False)
    result = measure_speedup(onnx_path, base_onnx, settings)
    assert result.speedup > 0 and result.candidate.median_ms > 0


def test_replay_of_kept_indices_gives_the_same_outputs() -> None:
    base = tiny_segformer()
    pruner = make_pruner()
    groups = pruner.groups(base)
    rng = random.Random(3)
    pruned = copy.deepcopy(base)
    result = pruner.prune(pruned, ratios={g.name: rng.uniform(0.1, g.max_ratio) for g in groups if g.tied_to is None})
    fresh = copy.deepcopy(base)
    replay = pruner.apply_indices(fresh, result.kept_indices)
    assert replay.kept == result.kept and replay.heads == result.heads
    check_attention(fresh, replay.heads)
    with torch.no_grad():
        assert torch.equal(fresh(X), pruned(X))


def test_replay_refuses_uneven_heads_and_broken_ties() -> None:
    pruner = make_pruner()
    groups = {g.name: g for g in pruner.groups(tiny_segformer())}
    att = "segformer.stages.3.blocks.0.attention.q_proj"
    with pytest.raises(PruningError, match=att):
        pruner.apply_indices(tiny_segformer(), {att: list(range(20))})  # heads of 8, 8 and 4 channels
    sr = "segformer.stages.1.blocks.0.attention.sequence_reduction.sequence_reduction"
    with pytest.raises(PruningError, match="tied"):
        pruner.apply_indices(tiny_segformer(), {sr: list(range(groups[sr].channels - 8))})


def test_architecture_json_reapplies_exactly(tmp_path: Path, seg_root: Path) -> None:
    """Prune through a study config, write the architecture JSON, rebuild from JSON + base checkpoint."""
    from conftest import TINY_STUDY
    from conftest import deep_merge
    from conftest import write_study

    from autoprune.base_model import file_sha256
    from autoprune.base_model import load_weights
    from autoprune.config import load_config
    from autoprune.selection.architecture import apply_architecture
    from autoprune.selection.architecture import build_architecture
    from autoprune.selection.architecture import read_architecture
    from autoprune.selection.architecture import write_architecture
    from autoprune.tasks import build_task
    from autoprune.trial.pruning_setup import make_pruner as study_pruner

    ckpt = tmp_path / "base.pt"
    torch.save(tiny_segformer(num_classes=2).state_dict(), ckpt)  # alpha mattes: background, foreground
    cfg_path = write_study(
        tmp_path,
        {
            "name": "seg-arch",
            "task": "segmentation",
            "task_options": {"root": str(seg_root), "mask_mode": "alpha", "image_size": 32},
            "model": "segformer",
            "model_options": TINY,
            "base": {"checkpoint": str(ckpt)},
            "pruning": {"round_to": 1, "min_channels": 2},
        },
        base=deep_merge(TINY_STUDY, {"model_options": None}),
    )
    cfg = load_config(cfg_path)
    task = build_task(cfg)
    base = load_weights(task.build_model(), ckpt)
    pruner = study_pruner(cfg, task)
    groups = pruner.groups(base)
    rng = random.Random(5)
    pruned = copy.deepcopy(base)
    result = pruner.prune(pruned, ratios={g.name: rng.uniform(0.1, g.max_ratio) for g in groups if g.tied_to is None})
    arch = build_architecture(cfg, task, result, file_sha256(ckpt), round_to=1)
    path = write_architecture(arch, tmp_path / "arch.json")
    applied = apply_architecture(read_architecture(path), config=cfg, checkpoint=ckpt)
    x = task.example_input(2).normal_(generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(applied.model(x), pruned.eval()(x))
    check_attention(applied.model, applied.result.heads)


def test_patch_attention_handles_the_transformers_4_layout() -> None:
    """transformers 4.x names: query/key/value, attention_head_size, all_head_size."""

    class SelfAttention4(nn.Module):  # the attributes SegformerEfficientSelfAttention had in 4.x
        def __init__(self) -> None:
            super().__init__()
            self.num_attention_heads = 4
            self.attention_head_size = 8
            self.all_head_size = 32
            self.query = nn.Linear(32, 32)
            self.key = nn.Linear(32, 32)
            self.value = nn.Linear(32, 32)
            self.sr_ratio = 1

    holder = nn.Module()
    holder.attn = SelfAttention4()
    for layer in (holder.attn.query, holder.attn.key, holder.attn.value):
        layer.out_features = 12  # as if pruned to 2 heads of 6
    assert list(segformer_num_heads(holder).values()) == [4, 4, 4]
    patch_attention(holder, {holder.attn.query: 2})
    assert (holder.attn.num_attention_heads, holder.attn.attention_head_size, holder.attn.all_head_size) == (2, 6, 12)
    with pytest.raises(PruningError, match="heads"):
        patch_attention(holder, {holder.attn.query: 5})


@pytest.fixture
def seg_root(tmp_path: Path) -> Path:
    from autoprune.tasks._seg_data import make_synthetic_segmentation

    return make_synthetic_segmentation(tmp_path / "seg", n=10, size=32)
