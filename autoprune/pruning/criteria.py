"""Importance criteria: a registry of small classes over torch-pruning's importance objects.

Each criterion turns a torch-pruning group into one score per channel (low = prune first).  Data-aware
criteria (``taylor``, ``hessian``) first need :meth:`Criterion.prepare` with a few batches of training data.

Example:
    >>> from autoprune.pruning.criteria import make_criterion
    >>> make_criterion("l2").needs_data
    False
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable

import torch
import torch_pruning as tp
from torch import nn

from autoprune.errors import PruningError

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class Criterion:
    """Base class: wraps a torch-pruning importance object."""

    name = "base"
    needs_data = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.importance = self._make()

    def _make(self) -> tp.importance.Importance:
        raise NotImplementedError

    def prepare(self, model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], loss_fn: LossFn) -> None:
        """Compute what the criterion needs from data (nothing for data-free criteria)."""

    def __call__(self, group: object) -> torch.Tensor:
        scores = self.importance(group)
        if scores is None:
            raise PruningError(f"criterion {self.name!r} found no prunable parameters in a group")
        return scores


class L1(Criterion):
    name = "l1"

    def _make(self) -> tp.importance.Importance:
        return tp.importance.GroupMagnitudeImportance(p=1)


class L2(Criterion):
    name = "l2"

    def _make(self) -> tp.importance.Importance:
        return tp.importance.GroupMagnitudeImportance(p=2)


class BNScale(Criterion):
    name = "bn-scale"

    def _make(self) -> tp.importance.Importance:
        return tp.importance.BNScaleImportance()


class FPGM(Criterion):
    """Geometric median: filters closest to the layer's median bring nothing new."""

    name = "fpgm"

    def _make(self) -> tp.importance.Importance:
        return tp.importance.FPGMImportance()


class LAMP(Criterion):
    name = "lamp"

    def _make(self) -> tp.importance.Importance:
        return tp.importance.LAMPImportance()


class Random(Criterion):
    name = "random"

    def _make(self) -> tp.importance.Importance:
        return tp.importance.RandomImportance()

    def __call__(self, group: object) -> torch.Tensor:
        # RandomImportance draws from torch's global RNG; seed it so a ratio vector prunes reproducibly.
        state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)
        try:
            return super().__call__(group)
        finally:
            torch.random.set_rng_state(state)


class Taylor(Criterion):
    """First-order Taylor |w * dL/dw|, gradients accumulated over the prepared batches."""

    name = "taylor"
    needs_data = True

    def _make(self) -> tp.importance.Importance:
        return tp.importance.GroupTaylorImportance()

    def prepare(self, model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], loss_fn: LossFn) -> None:
        model.zero_grad(set_to_none=True)
        seen = 0
        for x, y in batches:
            loss_fn(model, x, y).backward()
            seen += 1
        if seen == 0:
            raise PruningError(f"criterion {self.name!r} needs training batches to accumulate gradients; got none")


class Hessian(Criterion):
    """Optimal Brain Damage: 1/2 h_ii w_i^2 with the diagonal Hessian estimated by the empirical Fisher.

    torch-pruning 1.6.1's accumulator keeps only the last sample, so the per-sample squared gradients are
    averaged here and handed to its group reduction through ``param.grad``.
    """

    name = "hessian"
    needs_data = True
    max_samples = 64

    def _make(self) -> tp.importance.Importance:
        return tp.importance.GroupHessianImportance()

    def prepare(self, model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], loss_fn: LossFn) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        accum = [torch.zeros_like(p) for p in params]
        count = 0
        for x, y in batches:
            for i in range(x.shape[0]):
                if count >= self.max_samples:
                    break
                model.zero_grad(set_to_none=True)
                loss_fn(model, x[i : i + 1], y[i : i + 1]).backward()
                for a, p in zip(accum, params, strict=True):
                    if p.grad is not None:
                        a.add_(p.grad.detach() ** 2)
                count += 1
        if count == 0:
            raise PruningError(f"criterion {self.name!r} needs training batches to estimate the Hessian; got none")
        for a, p in zip(accum, params, strict=True):
            p.grad = a / count
        # OBD scores are 1/2 h w^2; the constant 1/2 does not change the ranking.


CRITERIA: dict[str, type[Criterion]] = {
    cls.name: cls for cls in (L1, L2, Taylor, Hessian, BNScale, FPGM, LAMP, Random)
}


def make_criterion(name: str, seed: int = 0) -> Criterion:
    """A criterion by name (``l1``, ``l2``, ``taylor``, ``hessian``, ``bn-scale``, ``fpgm``, ``lamp``, ``random``)."""
    if name not in CRITERIA:
        raise PruningError(f"unknown criterion {name!r}; choose one of {', '.join(CRITERIA)}")
    return CRITERIA[name](seed=seed)
