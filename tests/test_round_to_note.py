"""A pinned round_to finer than the host's channel block is pointed out when a study is created."""

from types import SimpleNamespace

import pytest

from autoprune.search import study as study_module
from autoprune.trial.pruning_setup import round_to_note


@pytest.mark.parametrize(
    ("configured", "block", "provider", "expected"),
    [
        (8, 16, "cpu", True),  # AVX-512 host, config pinned for 8-channel blocks
        (4, 8, "cpu", True),
        ("auto", 16, "cpu", False),  # auto follows the host
        (16, 16, "cpu", False),
        (32, 16, "cpu", False),  # coarser than the block: every width is on it
        (24, 16, "cpu", False),  # not a divisor: no claim about its widths
        (8, 16, "cuda", False),  # another provider's kernels are not the CPU's blocks
    ],
)
def test_note_only_for_a_finer_cpu_block(configured, block, provider, expected):
    note = round_to_note(configured, block, provider)
    assert (note is not None) is expected
    if expected:
        assert f"round_to {configured}" in note and f"({block})" in note and "round_to: auto" in note


def test_study_creation_says_the_note(monkeypatch):
    monkeypatch.setattr(study_module, "cpu_round_to", lambda: 16)
    lines = []
    config = SimpleNamespace(pruning=SimpleNamespace(round_to=8), latency=SimpleNamespace(provider="cpu"))
    study_module._note_round_to(config, lines.append)
    assert len(lines) == 1 and lines[0].startswith("note: pruning.round_to 8 is finer")
    config.pruning.round_to = "auto"
    lines.clear()
    study_module._note_round_to(config, lines.append)
    assert lines == []
