"""Where trials keep their artifacts (architecture JSON, finetuned weights, optional ONNX): a folder or S3.

``artifact_store`` in the study config (or ``$AUTOPRUNE_ARTIFACT_STORE``, which wins) names it by URL:

- ``file:///path`` or a plain path: Optuna's ``FileSystemArtifactStore`` (every worker must see the same
  folder); default: ``<artifact_dir>/optuna-artifacts``.
- ``s3://bucket/prefix``: Optuna's ``Boto3ArtifactStore`` (``pip install 'autoprune[s3]'``), objects under
  ``prefix/``.  Endpoint and credentials come from the usual AWS environment (``AWS_ENDPOINT_URL``,
  ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, profiles); none of them is ever
  printed.

:func:`open_store` checks the store before anything is written to it: a missing bucket or refused
credentials give one :class:`~autoprune.errors.ArtifactError` with the fix.  The S3 client's timeouts follow
the database's (:mod:`autoprune.timeouts`): an endpoint that never answers is given up on after
:data:`S3_ATTEMPTS` tries of one connect timeout each (botocore's defaults waited 199 s), or within a
command's ``--wait``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import BinaryIO
from urllib.parse import urlsplit

import optuna

from autoprune.errors import ArtifactError
from autoprune.redact import redact_url
from autoprune.timeouts import CONNECT_ENV
from autoprune.timeouts import connect_timeout

if TYPE_CHECKING:
    from autoprune.config import StudyConfig

ENV = "AUTOPRUNE_ARTIFACT_STORE"
S3_ATTEMPTS = 2  # tries of one S3 request (botocore's "standard" retries; its backoff before the retry is under 1 s)


def store_url(config: StudyConfig) -> str:
    """The artifact store's URL: ``$AUTOPRUNE_ARTIFACT_STORE``, the config's ``artifact_store``, else the folder."""
    url = os.environ.get(ENV) or config.artifact_store
    if url:
        return url if "://" in url else f"file://{config.resolve(url)}"
    return f"file://{config.artifact_path() / 'optuna-artifacts'}"


def describe(url: str) -> str:
    """The URL as messages show it (no credentials, whatever a user put in it)."""
    return redact_url(url) or url


def open_store(url: str, budget_s: float | None = None) -> Any:
    """The Optuna artifact store at ``url``, checked to be usable.

    Args:
        url: ``file:///path`` or ``s3://bucket/prefix``.
        budget_s: seconds the S3 check may take in all (a command's ``--wait``); None: :func:`s3_config`'s tries.

    Raises:
        ArtifactError: an unknown scheme, a missing bucket, refused credentials or no ``boto3``; one message
            naming the store (never a secret) and the fix.
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = Path(parts.path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactError(
                f"artifact store {path}: cannot create the folder ({exc.strerror or exc}); choose a writable artifact_store"
            ) from None
        return optuna.artifacts.FileSystemArtifactStore(str(path))
    if parts.scheme == "s3":
        return _s3_store(parts.netloc, parts.path.strip("/"), url, budget_s)
    raise ArtifactError(f"artifact store {describe(url)}: unknown scheme {parts.scheme!r}; use file:///path or s3://bucket/prefix")


def s3_config(budget_s: float | None = None) -> Any:
    """The botocore ``Config`` of the S3 client: connect and read timeouts of :func:`connect_timeout` each,
    :data:`S3_ATTEMPTS` tries; with ``budget_s``, fewer and shorter tries so that all of them fit in it.

    Example:
        >>> s3_config(budget_s=6).retries["total_max_attempts"], s3_config(budget_s=6).read_timeout
        (1, 3.0)
    """
    from botocore.config import Config

    timeout, attempts = float(connect_timeout()), S3_ATTEMPTS
    if budget_s is not None and budget_s < attempts * (2 * timeout + 1):  # a try may spend both timeouts
        attempts = 1
        timeout = min(timeout, max(0.5, budget_s / 2))
    return Config(connect_timeout=timeout, read_timeout=timeout, retries={"total_max_attempts": attempts, "mode": "standard"})


def _s3_store(bucket: str, prefix: str, url: str, budget_s: float | None) -> Any:
    """A Boto3 store for ``bucket`` (objects under ``prefix``), after a ``head_bucket`` that proves access."""
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        raise ArtifactError(f"artifact store {describe(url)} needs boto3: pip install 'autoprune[s3]'") from None
    if not bucket:
        raise ArtifactError(f"artifact store {describe(url)}: name a bucket, e.g. s3://my-bucket/autoprune")
    client = boto3.client("s3", config=s3_config(budget_s))
    start = time.monotonic()
    try:
        client.head_bucket(Bucket=bucket)
    except botocore.exceptions.NoCredentialsError:
        raise ArtifactError(
            f"artifact store {describe(url)}: no AWS credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile)"
        ) from None
    except botocore.exceptions.ClientError as exc:
        raise ArtifactError(_client_error(exc, bucket, url)) from None
    except (botocore.exceptions.ConnectTimeoutError, botocore.exceptions.ReadTimeoutError) as exc:
        raise ArtifactError(
            f"artifact store {describe(url)}: no answer from the S3 endpoint ({type(exc).__name__} after "
            f"{time.monotonic() - start:.0f} s); check AWS_ENDPOINT_URL and that the server is up "
            f"(${CONNECT_ENV} sets the wait per try)"
        ) from None
    except botocore.exceptions.BotoCoreError as exc:  # endpoint unreachable, bad endpoint URL, ...
        raise ArtifactError(f"artifact store {describe(url)}: {type(exc).__name__}; check AWS_ENDPOINT_URL and the network") from None
    store = optuna.artifacts.Boto3ArtifactStore(bucket, client=client)
    return PrefixedStore(store, prefix) if prefix else store


def _client_error(exc: Any, bucket: str, url: str) -> str:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code in ("404", "NoSuchBucket", "NotFound"):
        return f"artifact store {describe(url)}: bucket {bucket!r} does not exist; create it or fix artifact_store"
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
        return (f"artifact store {describe(url)}: access to bucket {bucket!r} refused ({code}); check AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY and the bucket's policy")
    return f"artifact store {describe(url)}: {code or type(exc).__name__}; check the bucket and the credentials"


class PrefixedStore:
    """An artifact store that keeps every artifact under ``prefix/`` of another store (one bucket, many studies)."""

    def __init__(self, inner: Any, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix.strip("/")

    def _key(self, artifact_id: str) -> str:
        return f"{self.prefix}/{artifact_id}"

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.inner.open_reader(self._key(artifact_id))

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.inner.write(self._key(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        self.inner.remove(self._key(artifact_id))


def fetch(store: Any, artifact_id: str, path: Path, config: StudyConfig, owner: str) -> None:
    """Download one of ``owner``'s artifacts to ``path`` (replacing a file left there by an earlier run); a
    missing one names the store and the fix."""
    path.unlink(missing_ok=True)  # Optuna refuses to overwrite
    try:
        optuna.artifacts.download_artifact(artifact_store=store, artifact_id=artifact_id, file_path=str(path))
    except (optuna.artifacts.exceptions.ArtifactNotFound, FileNotFoundError):
        raise ArtifactError(
            f"{owner}: artifact {artifact_id} is missing from the artifact store {describe(store_url(config))}; run this "
            "where the workers' artifact store (artifact_store, or artifact_dir) is reachable"
        ) from None


def study_store(config: StudyConfig, budget_s: float | None = None) -> Any:
    """The study's artifact store (see :func:`store_url`), checked within ``budget_s`` seconds (None: no bound)."""
    return open_store(store_url(config), budget_s)


__all__ = ["ENV", "S3_ATTEMPTS", "PrefixedStore", "describe", "fetch", "open_store", "s3_config", "store_url", "study_store"]
