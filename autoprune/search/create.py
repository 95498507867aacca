"""Create a study once, with progress shown: base model (trained if missing), baselines, bounds."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any

import optuna

from autoprune import console
from autoprune.base_model import train_base
from autoprune.config import load_config
from autoprune.device import check_targets
from autoprune.search.study import create_or_load
from autoprune.search.study import storage_for
from autoprune.search.worker import set_torch_threads
from autoprune.selection.artifacts import study_store
from autoprune.tasks import build_task
from autoprune.trial.candidate import StudyContext

if TYPE_CHECKING:
    from autoprune.config import StudyConfig




def train_base_if_missing(cfg: StudyConfig, say: Callable[[str], None] = console.note) -> None:
    """Train the base model when its checkpoint is missing (with a progress bar)."""
    if cfg.checkpoint_path().is_file():
        return
    say(f"training the base model ({cfg.base.epochs} epochs) -> {cfg.checkpoint_path()}")
    task = build_task(cfg)
    bar = console.progress(cfg.base.epochs, "base model", "epoch", leave=False)

    def progress(epoch: int, epochs: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    with task.forbid_split("test"):
        info = train_base(cfg, task, progress=progress)
    bar.close()
    say(f"base model: validation {task.metric_name} {info.val_metric:.4f}, sha256 {info.sha256[:12]}...")


def create_study(
    config_path: str, storage: str | None = None, say: Callable[[str], None] = console.note
) -> tuple[StudyConfig, str, optuna.Study]:
    """Create (or join, when it is ready) the study of a config.

    Args:
        config_path: the study YAML.
        storage: storage URL override.
        say: prints one line.

    Returns:
        ``(config, storage URL, study)``.
    """
    cfg = load_config(config_path)
    check_targets(cfg)  # a missing GPU or provider is refused before the storage, the base or the sweeps
    url = cfg.storage_url(storage)
    storage_for(cfg, url)  # reachable before anything is trained (a bad URL fails in seconds, not after the base)
    study_store(cfg)  # and the artifact store (a missing bucket, refused credentials)
    threads = set_torch_threads(cfg.search.torch_threads)  # base training and sweeps share the host like workers do
    say(f"{threads} torch thread(s) for the base model and the sweeps")
    train_base_if_missing(cfg, say)
    ctx = StudyContext.build(cfg)
    bars = StageBars()

    def on_point(p) -> None:
        bars.update("baselines", 1, f"{p.kind} {p.ratio:.2f}: drop {p.drop:+.4f}, {p.speedup:.2f}x")

    try:
        study = create_or_load(cfg, url, ctx, on_point=on_point, say=say, on_stage=bars.stage)
    finally:
        bars.close()
    return ctx.config, url, study  # with the study's calibrated recipe, when there is one


class StageBars:
    """One progress bar per slow stage of study creation (recipe calibration, baseline sweeps), each opened
    when its stage starts, so no bar waits through another stage with a misleading ETA."""

    UNITS = {"calibration": "recipe", "baselines": "point"}

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}

    def stage(self, name: str, done: int, total: int) -> None:
        """``done`` of ``total`` items of stage ``name`` are finished (0: the stage starts; its bar opens)."""
        if name not in self.bars:
            self.close()
            self.bars[name] = console.progress(total, name, self.UNITS.get(name, "item"), leave=False)
        bar = self.bars[name]
        bar.update(done - bar.n)
        if done >= total > 0:  # finished: off the screen before the stage's closing lines
            bar.close()
            del self.bars[name]

    def update(self, name: str, step: int, postfix: str = "") -> None:
        bar = self.bars.get(name)
        if bar is not None:
            bar.update(step)
            if postfix:
                bar.set_postfix_str(postfix)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars = {}
