"""optuna-dashboard for a study, bound to 127.0.0.1 by default, with the study's artifact store."""

from __future__ import annotations

from collections.abc import Callable

from autoprune.config import load_config
from autoprune.errors import StorageError
from autoprune.redact import redact_url
from autoprune.search.storage import open_storage
from autoprune.selection.artifacts import describe
from autoprune.selection.artifacts import store_url
from autoprune.selection.artifacts import study_store


def serve(config_path: str, storage: str | None, host: str, port: int, say: Callable[[str], None] = print) -> None:
    """Serve optuna-dashboard until interrupted.

    Args:
        config_path: the study YAML (storage URL and artifact folder).
        storage: storage URL override.
        host: interface to bind.
        port: TCP port.
        say: prints one line.
    """
    cfg = load_config(config_path)
    url = cfg.storage_url(storage)
    backend = open_storage(url, heartbeat_interval=None)
    store = study_store(cfg)
    say(f"optuna-dashboard for {redact_url(url)} at http://{host}:{port}/ (artifacts: {describe(store_url(cfg))}); Ctrl-C stops it")
    from optuna_dashboard import run_server  # heavy (its web app); loaded once the study's storage answers

    try:
        run_server(backend, host=host, port=port, artifact_store=store)
    except OSError as exc:
        raise StorageError(f"cannot serve the dashboard on {host}:{port}: {exc.strerror or exc}; pick another --port") from None
