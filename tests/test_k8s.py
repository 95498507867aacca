"""The Kubernetes manifests (deploy/k8s): they render, validate against the Kubernetes OpenAPI schemas of a
pinned version, keep the dashboard and database inside the cluster, keep secrets out of ConfigMaps, run as
non-root, and run the worker command the README documents."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.30"  # the oldest version still in wide use; its schemas ship with kubernetes-validate
VARIANTS = ["", "gpu", "postgres"]
SECRET_KEYS = ("AUTOPRUNE_STORAGE", "AUTOPRUNE_ARTIFACT_STORE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "POSTGRES_PASSWORD")


def _plain(folder: Path) -> list[dict[str, Any]]:
    """Without kubectl: the resources a kustomization lists, its generated ConfigMaps, and its bases."""
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for res in kust.get("resources", []):
        path = (folder / res).resolve()
        docs += _plain(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    for gen in kust.get("configMapGenerator", []):
        data = {Path(f).name: (folder / f).read_text() for f in gen.get("files", [])}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    return docs


def render(variant: str) -> list[dict[str, Any]]:
    folder = K8S / variant if variant else K8S
    if shutil.which("kubectl"):
        out = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return [d for d in yaml.safe_load_all(out.stdout) if d]
    return _plain(folder)


def _pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in docs if d["kind"] in ("Job", "Deployment", "StatefulSet")]


@pytest.mark.parametrize("variant", VARIANTS)
def test_manifests_render_and_validate(variant: str) -> None:
    import kubernetes_validate

    docs = render(variant)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)  # raises on any unknown or mistyped field
        assert "namespace" not in doc["metadata"], doc["metadata"]  # no cluster-specific names


def test_a_mistyped_manifest_is_caught() -> None:
    import kubernetes_validate

    job = next(d for d in render("") if d["kind"] == "Job")
    job["spec"]["parallelism"] = "four"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_nothing_is_exposed_beyond_the_cluster_and_no_secret_sits_in_a_configmap(variant: str) -> None:
    docs = render(variant)
    for doc in docs:
        if doc["kind"] == "Service":
            assert doc["spec"].get("type", "ClusterIP") == "ClusterIP" and not doc["spec"].get("externalIPs"), doc
        if doc["kind"] == "ConfigMap":
            text = "\n".join(str(v) for v in (doc.get("data") or {}).values())
            assert not any(re.search(rf"{key}\s*[:=]", text) for key in SECRET_KEYS), doc["metadata"]["name"]
            assert not re.search(r"^\s*(storage|artifact_store)\s*:\s*\S", text, re.M), doc["metadata"]["name"]  # URLs come from the Secret
            assert not re.search(r"://[^/\s:@]+:[^@\s]+@", text), doc["metadata"]["name"]  # no URL with a password
        if doc["kind"] == "Ingress":
            pytest.fail("no Ingress: the dashboard is reached with kubectl port-forward")
    for name, spec in _pod_specs(docs):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            env = {e["name"]: e for e in container.get("env", [])}
            for key in SECRET_KEYS:  # secrets come from a Secret, never as literal values
                assert key not in env or "valueFrom" in env[key], (name, key)


def test_the_worker_runs_the_readme_command_on_a_valid_study() -> None:
    from autoprune.config import parse_config

    docs = render("")
    worker = next(spec for name, spec in _pod_specs(docs) if name == "autoprune-workers")["containers"][0]
    entrypoint = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("ENTRYPOINT"))
    assert entrypoint == 'ENTRYPOINT ["autoprune"]' and worker["args"][:1] == ["worker"]
    readme = (ROOT / "README.md").read_text()
    assert "autoprune worker studies/" in readme  # the documented command: `autoprune worker CONFIG [...]`
    config_path = worker["args"][1]
    mount = next(m for m in worker["volumeMounts"] if config_path.startswith(m["mountPath"]))
    configmap = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("autoprune-study"))
    study = yaml.safe_load(configmap["data"][Path(config_path).relative_to(mount["mountPath"]).as_posix()])
    assert parse_config(study).name == "k8s-digits"
    gpu = next(spec for name, spec in _pod_specs(render("gpu")) if name == "autoprune-workers")
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1" and gpu["nodeSelector"]


@pytest.mark.skipif(not shutil.which("kubectl"), reason="compares with kubectl kustomize")
@pytest.mark.parametrize("variant", ["", "postgres"])
def test_the_fallback_rendering_matches_kustomize(variant: str) -> None:
    """Where kubectl is missing the tests read the files themselves; they must see what kustomize renders."""
    folder = K8S / variant if variant else K8S
    names = lambda docs: sorted((d["kind"], d["metadata"]["name"].split("-")[0] if d["kind"] == "ConfigMap" else d["metadata"]["name"]) for d in docs)  # noqa: E731
    assert names(_plain(folder)) == names(render(variant))


def test_every_pod_runs_a_real_autoprune_command_and_the_readme_links_the_guide() -> None:
    from autoprune.cli import main

    for variant in VARIANTS:
        for name, spec in _pod_specs(render(variant)):
            container = spec["containers"][0]
            if container["image"].startswith("postgres"):
                continue
            assert container["args"][0] in main.commands, (name, container["args"])
    assert "docs/deployment.md#kubernetes" in (ROOT / "README.md").read_text()
    assert "\n## Kubernetes\n" in (ROOT / "docs" / "deployment.md").read_text()
