"""Trial artifacts in an S3-compatible store (moto's server on 127.0.0.1, real HTTP, real credentials checks).

A small study runs with ``artifact_store: s3://bucket/prefix``; then ``export`` and ``apply`` run from a clean
folder that holds only the config, the study database and the base checkpoint (no artifact folder: the
architecture and weights come from the bucket).  A missing bucket and refused credentials are one message,
exit 2, with no secret printed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import silent
from conftest import run_cli
from conftest import write_study

from autoprune.errors import ArtifactError
from autoprune.selection.artifacts import S3_ATTEMPTS
from autoprune.selection.artifacts import open_store

BUCKET = "autoprune-test"
PREFIX = "studies/tiny"
NO_AUTH_ACTIONS = 3  # the IAM calls that make the test user; every later request must be signed by a known key


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A moto S3 server with one bucket and one IAM user allowed s3:*; yields the AWS environment to use."""
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(NO_AUTH_ACTIONS)
    import boto3
    import moto.settings
    from moto.server import ThreadedMotoServer

    moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = NO_AUTH_ACTIONS
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup")
    iam.create_user(UserName="autoprune")
    key = iam.create_access_key(UserName="autoprune")["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="autoprune", PolicyName="s3", PolicyDocument=json.dumps(policy))
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=BUCKET)
    yield env
    server.stop()


def _objects(env: dict[str, str]) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    return [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


@pytest.mark.slow
def test_a_study_keeps_its_artifacts_in_s3_and_exports_from_a_clean_folder(s3, tiny_study, tmp_path: Path, monkeypatch) -> None:
    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AUTOPRUNE_STORAGE", raising=False)
    checkpoint = tmp_path / "shared" / "base.pt"
    checkpoint.parent.mkdir()
    shutil.copyfile(tiny_study.checkpoint, checkpoint)
    overrides = {"name": "s3-study", "artifact_store": f"s3://{BUCKET}/{PREFIX}", "base": {"checkpoint": str(checkpoint)},
                 "search": {"trials": 3, "sweep_ratios": [0.3], "screening": False}, "max_drop": 0.9}
    config = write_study(tmp_path / "workers", overrides)
    ran = run_cli("run", config, "--trials", "3")
    assert ran.returncode == 0, ran.stderr
    keys = _objects(s3)
    assert keys and all(k.startswith(PREFIX + "/") for k in keys)
    assert not list((tmp_path / "workers").rglob("optuna-artifacts"))  # nothing went to a local folder
    assert s3["AWS_SECRET_ACCESS_KEY"] not in ran.stdout + ran.stderr

    # Another machine: the config, the study database and the base checkpoint, no artifact folder.
    clean = tmp_path / "clean"
    clean.mkdir()
    shutil.copyfile(tmp_path / "workers" / "s3-study.db", clean / "s3-study.db")
    shutil.copyfile(checkpoint, clean / "base.pt")
    moved = write_study(clean, dict(overrides, base={"checkpoint": str(clean / "base.pt")}))
    shutil.rmtree(tmp_path / "workers")
    exported = run_cli("export", moved, "-o", clean / "arch.json", "--no-confirm", cwd=clean)
    assert exported.returncode == 0, exported.stderr
    assert (clean / "arch.json").is_file() and (clean / "arch.weights.pt").is_file()
    applied = run_cli("apply", clean / "arch.json", "-o", clean / "pruned.onnx", "--config", moved, cwd=clean)
    assert applied.returncode == 0 and "finetuned weights" in applied.stdout, applied.stderr


@pytest.mark.parametrize("case", ["missing bucket", "bad credentials"])
def test_a_missing_bucket_or_refused_credentials_is_one_message(s3, tmp_path: Path, monkeypatch, case: str) -> None:
    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    bucket = "no-such-bucket" if case == "missing bucket" else BUCKET
    secret = "wrong-secret-never-printed" if case == "bad credentials" else s3["AWS_SECRET_ACCESS_KEY"]
    if case == "bad credentials":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    config = write_study(tmp_path, {"artifact_store": f"s3://{bucket}/x"})
    res = run_cli("create", config)
    out = res.stdout + res.stderr
    assert res.returncode == 2 and "Traceback" not in out and secret not in out, out
    assert ("does not exist" in out) if case == "missing bucket" else ("refused" in out and "AWS_ACCESS_KEY_ID" in out), out
    from autoprune.config import load_config

    assert not load_config(config).checkpoint_path().exists()  # checked before anything was trained


SILENT_CONNECT_S = 2
BACKOFF_S = 1.0  # botocore's standard retry waits under 1 s before its second try
TOLERANCE_S = 1.0
STARTUP_S = 60.0  # a fresh interpreter importing torch on a loaded host


@pytest.fixture
def silent_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[socket.socket]]:
    """An S3 endpoint that accepts connections and never answers; connect timeout 2 s; a secret in the env."""
    with silent.silent_server() as (port, held):
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIASILENTSILENT")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "silent-secret-never-printed")
        monkeypatch.setenv("AUTOPRUNE_CONNECT_TIMEOUT", str(SILENT_CONNECT_S))
        yield held


@pytest.mark.parametrize("budget_s", [None, 3.0])
def test_a_silent_s3_endpoint_is_given_up_on_within_the_bound(silent_s3: list[socket.socket], budget_s: float | None) -> None:
    """Without a budget: S3_ATTEMPTS tries of one connect timeout each (was 199 s); with one: within it."""
    bound = budget_s if budget_s is not None else S3_ATTEMPTS * SILENT_CONNECT_S + BACKOFF_S
    start = time.monotonic()
    with pytest.raises(ArtifactError, match="no answer from the S3 endpoint"):
        open_store("s3://bucket/prefix", budget_s=budget_s)
    took = time.monotonic() - start
    assert silent_s3  # it did connect, and waited on a server that never answered
    assert took <= bound + TOLERANCE_S, took


def test_a_worker_reports_a_silent_s3_endpoint_within_its_wait(silent_s3: list[socket.socket], tmp_path: Path) -> None:
    config = write_study(tmp_path, {"artifact_store": "s3://bucket/prefix"})
    start = time.monotonic()
    res = run_cli("worker", config, "--wait", "3", timeout=180)
    took = time.monotonic() - start
    out = res.stdout + res.stderr
    assert res.returncode == 2 and "Traceback" not in out and "silent-secret" not in out, out
    assert "no answer from the S3 endpoint" in out and "AWS_ENDPOINT_URL" in out, out
    assert took <= 3 + TOLERANCE_S + STARTUP_S, took
