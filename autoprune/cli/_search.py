"""Commands of the search service: create, run, worker, dashboard, demo."""

from __future__ import annotations

import os
import zlib

import click
import optuna

from autoprune import console
from autoprune.cli._output import output_options
from autoprune.config import load_config
from autoprune.console import result
from autoprune.demo import run_demo
from autoprune.device import DEVICE_ENV
from autoprune.device import check_targets
from autoprune.errors import ConfigError
from autoprune.redact import redact_url
from autoprune.search.create import create_study as _create
from autoprune.search.dashboard import serve
from autoprune.search.storage import check_workers
from autoprune.search.study import storage_for
from autoprune.search.worker import run_gpu_workers
from autoprune.search.worker import run_local
from autoprune.search.worker import run_worker

_DEVICE_HELP = "Where the torch stages run: auto, cpu, cuda, cuda:N or mps (overrides the config's 'device')."


def _set_device(device: str | None) -> None:
    """``--device``: the config's ``device`` for this process and the workers it starts."""
    if device:
        os.environ[DEVICE_ENV] = device


def _progress_bar(target: int, desc: str = "trials"):
    bar = console.progress(target, desc, "trial")

    def update(done: int, total: int, best: float | None) -> None:
        bar.n = min(done, total)
        bar.set_postfix_str(f"best feasible {best:.2f}x" if best is not None else "no feasible trial yet")
        bar.refresh()

    return bar, update


def create_study(config_path: str, storage: str | None):
    return _create(config_path, storage, say=console.note)


@click.command("create")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--storage", default=None, help="Storage URL (default: the config's, else a SQLite file next to it).")
@output_options
def create_cmd(config: str, storage: str | None) -> None:
    """Create the study once: base model, baselines, bounds, enqueued baseline trials (no search)."""
    cfg, url, study = create_study(config, storage)
    bounds = study.user_attrs["bounds"]
    result(f"study {cfg.name!r} ready in {redact_url(url)} with {len(bounds)} searched groups; start workers with:")
    result(f"  autoprune worker {config} --storage '{redact_url(url)}'")


@click.command("run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(0, 256), help="Local worker processes (0: create only).")
@click.option("--trials", default=None, type=click.IntRange(1), help="Finished trials the study should hold (default: search.trials).")
@click.option("--storage", default=None, help="Storage URL (default: the config's, else a SQLite file next to it).")
@click.option("--device", default=None, help=_DEVICE_HELP)
@output_options
def run_cmd(config: str, workers: int, trials: int | None, storage: str | None, device: str | None) -> None:
    """Create the study if needed, then run local workers until it holds the requested trials."""
    _set_device(device)
    cfg0 = load_config(config)
    check_targets(cfg0)
    check_workers(cfg0.storage_url(storage), workers)
    cfg, url, study = create_study(config, storage)
    if workers == 0:
        click.echo("study created; no workers started (--workers 0)")
        return
    target = trials or cfg.search.trials
    bar, update = _progress_bar(target)
    failed = run_local(config, url, workers, target, progress=update)
    bar.close()
    _print_outcome(config, cfg, url)
    if failed:
        raise SystemExit(2)


def _print_outcome(config_path: str, cfg, url: str) -> None:
    study = optuna.load_study(study_name=cfg.name, storage=storage_for(cfg, url))
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    result("trials: " + ", ".join(f"{k.lower()} {v}" for k, v in sorted(states.items())))
    result(f"see the Pareto front with: autoprune pareto {config_path}")


@click.command("worker")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--storage", default=None, help="Storage URL of the shared study (default: the config's or $AUTOPRUNE_STORAGE).")
@click.option("--trials", default=None, type=click.IntRange(1), help="Finished trials the study should hold (default: the study's target).")
@click.option("--wait", "wait_s", default=600.0, show_default=True, type=float,
              help="Seconds to wait for the storage and the artifact store to answer and the study to be created.")
@click.option("--id", "worker_id", default=None, help="Worker id in logs and trial attrs (default: host:pid).")
@click.option("--device", default=None, help=_DEVICE_HELP)
@click.option("--gpus", default=None, help="Start one worker process per listed GPU, e.g. 0,1,2,3 (each on cuda:N).")
@output_options
def worker_cmd(
    config: str, storage: str | None, trials: int | None, wait_s: float, worker_id: str | None, device: str | None, gpus: str | None
) -> None:
    """Join an existing study (from any machine) and run trials; never recomputes the bounds."""
    if gpus is not None:
        if device:
            raise ConfigError("--gpus and --device exclude each other: --gpus gives every process its own cuda:N")
        failed = run_gpu_workers(config, storage, trials, gpus, worker=worker_id, wait_timeout=wait_s)
        result(f"{len(gpus.split(','))} GPU worker(s) finished; {failed} failed")
        if failed:
            raise SystemExit(2)
        return
    _set_device(device)
    index = zlib.crc32((worker_id or str(os.getpid())).encode()) % 10_000
    summary = run_worker(config, storage, trials, worker=worker_id, worker_index=index, wait_timeout=wait_s)
    result(f"worker {summary.worker}: ran {summary.ran} trials; study holds {summary.finished}/{summary.target}")


@click.command("dashboard")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--storage", default=None, help="Storage URL (default: the config's).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (keep 127.0.0.1 unless you mean it).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
def dashboard_cmd(config: str, storage: str | None, host: str, port: int) -> None:
    """Start optuna-dashboard for the study, with its artifact store."""
    serve(config, storage, host, port, say=lambda line: click.echo(line, err=True))


@click.command("demo")
@click.option("--out", "--dir", "workdir", default="autoprune-demo", show_default=True, type=click.Path(file_okay=False),
              help="Where the demo writes its study, models and report.")
@click.option("--trials", default=16, show_default=True, type=click.IntRange(1), help="Search trials.")
@click.option("--model", default="resnet", show_default=True, type=click.Choice(["resnet", "mobilenet"]))
@output_options
def demo_cmd(workdir: str, trials: int, model: str) -> None:
    """Train a digits model, run the baselines and a short search, print the Pareto front and the choice."""
    run_demo(workdir, trials, model)


COMMANDS = [create_cmd, run_cmd, worker_cmd, dashboard_cmd, demo_cmd]
