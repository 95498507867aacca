"""The width space of attention groups (whole heads of one width) on a tiny Segformer: every width prunes to itself.

Attention groups keep whole, equally wide heads, so their widths are not simply multiples of ``round_to``
(3 heads of 7 channels = 21); the space maps each width to the request the pruner turns into it, and tied
sr-conv groups follow their leader's parameter.
"""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("transformers")

from test_segformer_pruning import make_pruner  # noqa: E402
from test_segformer_pruning import tiny_segformer  # noqa: E402

from autoprune.pruning import GuardSettings  # noqa: E402
from autoprune.search.study import head_plans  # noqa: E402
from autoprune.space.widths import ratios_for  # noqa: E402
from autoprune.space.widths import width_space  # noqa: E402


@pytest.mark.slow
def test_every_width_of_every_group_prunes_to_itself() -> None:
    guards = GuardSettings(min_channels=2, min_fraction=0.1, first_layer_max_ratio=0.5, round_to=4)
    pruner = make_pruner(guards=guards)
    model = tiny_segformer()
    groups = pruner.groups(model)
    space = width_space(groups, guards, [], None, head_plans(groups))
    assert all(g.tied_to is None for g in groups if g.name in space) and any(g.tied_to for g in groups)
    attention = [g.name for g in groups if g.heads and g.name in space]
    assert attention and 21 in space["segformer.stages.2.blocks.0.attention.q_proj"].widths  # 3 heads of 7
    for i in range(max(len(g.widths) for g in space.values())):
        widths = {name: g.widths[min(i, len(g.widths) - 1)] for name, g in space.items()}
        result = pruner.prune(copy.deepcopy(model), ratios=ratios_for(space, widths))
        assert {name: result.kept[name] for name in space} == widths
