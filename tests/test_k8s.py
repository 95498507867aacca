"""The Kubernetes manifests (deploy/k8s): they render, validate against the Kubernetes OpenAPI schemas of a
pinned version, keep the dashboard and database inside the cluster, keep secrets out of ConfigMaps, run as
non-root, and run the worker command the README documents.  The documented scale command keeps the Indexed
worker Job's parallelism and completions equal, worker pods time alone on their node, every long-running
container has probes (the dashboard's answer on a real server), and the study's paths lie on the shared volume."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
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


def _pod_spec(variant: str, name: str) -> dict[str, Any]:
    return next(spec for pod, spec in _pod_specs(render(variant)) if pod == name)


def _scale_args() -> list[str]:
    """The arguments of the documented scale command, after ``kubectl patch job autoprune-workers``."""
    found = re.findall(r"`kubectl patch job autoprune-workers ([^`]+)`", DEPLOYMENT_DOC.read_text())
    assert len(found) == 1, f"docs/deployment.md should document one scale command, found {found}"
    assert found[0] in (K8S / "base" / "job-workers.yaml").read_text(), "job-workers.yaml names another scale command"
    return shlex.split(found[0])


def _patched(job: dict[str, Any], args: list[str], folder: Path) -> dict[str, Any]:
    """``kubectl patch --local`` of the rendered Job: what the command does to the live one, without a cluster."""
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    out = subprocess.run(["kubectl", "patch", "--local", "-f", str(path), *args, "-o", "yaml"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


@pytest.mark.skipif(not shutil.which("kubectl"), reason="runs kubectl patch --local")
@pytest.mark.parametrize("variant", ["", "gpu"])
def test_the_documented_scale_command_scales_the_indexed_job(variant: str, tmp_path: Path) -> None:
    import kubernetes_validate

    job = next(d for d in render(variant) if d["kind"] == "Job" and d["metadata"]["name"] == "autoprune-workers")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == spec["completions"], spec
    scaled = _patched(job, _scale_args(), tmp_path)
    kubernetes_validate.validate(scaled, KUBERNETES, strict=True)
    # Kubernetes accepts a change of an Indexed Job's completions only together with parallelism, both equal.
    assert scaled["spec"]["parallelism"] == scaled["spec"]["completions"] != spec["parallelism"], scaled["spec"]
    old = _patched(job, ["-p", '{"spec":{"parallelism":8}}'], tmp_path)  # the former command fails this check
    assert old["spec"]["parallelism"] != old["spec"]["completions"]


def _alone_on_node(spec: dict[str, Any], labels: dict[str, str]) -> bool:
    """A required pod anti-affinity that keeps pods with these labels on separate nodes."""
    terms = spec.get("affinity", {}).get("podAntiAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", [])
    return any(
        term["topologyKey"] == "kubernetes.io/hostname" and term["labelSelector"].get("matchLabels", {}).items() <= labels.items()
        for term in terms
    )


def _lock_on_host(spec: dict[str, Any]) -> bool:
    """The worker's AUTOPRUNE_LOCK_DIR is a hostPath folder (shared by every pod of the node)."""
    container = spec["containers"][0]
    lock_dir = next((e["value"] for e in container.get("env", []) if e["name"] == "AUTOPRUNE_LOCK_DIR"), "/locks")
    host_volumes = {v["name"] for v in spec.get("volumes", []) if "hostPath" in v}
    return any(m["mountPath"] == lock_dir and m["name"] in host_volumes for m in container.get("volumeMounts", []))


@pytest.mark.parametrize("variant", ["", "gpu"])
def test_worker_timings_never_overlap_on_a_node(variant: str) -> None:
    """The timing lock is a file: it is per node only on a hostPath, or with one worker pod per node."""
    job = next(d for d in render(variant) if d["kind"] == "Job" and d["metadata"]["name"] == "autoprune-workers")
    spec, labels = job["spec"]["template"]["spec"], job["spec"]["template"]["metadata"]["labels"]
    assert _lock_on_host(spec) or _alone_on_node(spec, labels), "two worker pods on one node could time at once"
    assert "at most one worker pod\nruns on a node" in DEPLOYMENT_DOC.read_text()
    bare = {k: v for k, v in spec.items() if k != "affinity"}
    assert not _lock_on_host(bare) and not _alone_on_node(bare, labels)  # what the manifests had before


def test_every_long_running_container_has_probes() -> None:
    for variant in VARIANTS:
        for doc in render(variant):
            if doc["kind"] not in ("Deployment", "StatefulSet"):
                continue
            for c in doc["spec"]["template"]["spec"]["containers"]:
                assert "livenessProbe" in c and "readinessProbe" in c, (variant, doc["metadata"]["name"], c["name"])
    dashboard = _pod_spec("", "autoprune-dashboard")["containers"][0]
    ports = {p["name"] for p in dashboard["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        assert dashboard[probe]["httpGet"]["port"] in ports, dashboard[probe]
    postgres = _pod_spec("postgres", "autoprune-postgres")["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        assert postgres[probe]["exec"]["command"][0] == "pg_isready", postgres[probe]
    # Jobs run one process each; the guide says why the workers have no liveness probe.
    worker = _pod_spec("", "autoprune-workers")["containers"][0]
    probes = DEPLOYMENT_DOC.read_text().split("**Probes.**", 1)
    assert "livenessProbe" in worker or (len(probes) == 2 and "worker" in probes[1].split("\n\n")[0]), "say why workers have no probe"


def test_the_dashboard_answers_its_probes(tmp_path: Path) -> None:
    """The probe paths of the manifest, asked of a real `autoprune dashboard` (SQLite study, no trials yet)."""
    from conftest import write_study
    from test_dashboard import free_port
    from test_dashboard import get

    dashboard = _pod_spec("", "autoprune-dashboard")["containers"][0]
    paths = [dashboard[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")]
    config = write_study(tmp_path, {"name": "probe", "storage": f"sqlite:///{tmp_path / 'probe.db'}"})
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("AUTOPRUNE_STORAGE", "AUTOPRUNE_ARTIFACT_STORE")}
    cmd = [sys.executable, "-c", "from autoprune.cli import main; main()", "dashboard", str(config), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60  # startup is a few seconds; 60 s leaves room for a loaded machine
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                statuses = [get(f"http://127.0.0.1:{port}{path}")[0] for path in paths]
                break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not answer within 60 s"
                time.sleep(0.3)
        assert all(200 <= s < 400 for s in statuses), dict(zip(paths, statuses, strict=True))  # kubelet's success range
    finally:
        proc.kill()  # its clean stop on SIGTERM is test_dashboard's subject
        proc.wait()


def test_the_study_paths_lie_on_the_shared_volume() -> None:
    """The study's absolute paths are pod paths: on the volume every pod mounts, or the workers never see them."""
    from autoprune.config import parse_config

    for variant in ("", "gpu"):
        docs = render(variant)
        configmap = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("autoprune-study"))
        study = parse_config(yaml.safe_load(configmap["data"]["study.yaml"]))
        paths = [study.artifact_path(), study.checkpoint_path()]
        claims = set()
        for name, spec in _pod_specs(docs):
            volumes = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in spec.get("volumes", [])}
            mounts = spec["containers"][0]["volumeMounts"]
            for path in paths:
                on = [m for m in mounts if path.is_absolute() and path.as_posix().startswith(m["mountPath"].rstrip("/") + "/")]
                assert on and volumes[on[0]["name"]], f"{name}: {path} is on no shared volume ({[m['mountPath'] for m in mounts]})"
                claims.add(volumes[on[0]["name"]])
        assert len(claims) == 1, claims
    assert "**Paths in the study.**" in DEPLOYMENT_DOC.read_text()


def test_the_readme_gives_the_three_commands() -> None:
    """Build and push, point the kustomization at the image, apply: in the README, runnable as written."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### On Kubernetes", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's Kubernetes paragraph has no commands"
    commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.split("#", 1)[0].strip()]
    assert len(commands) == 3, commands
    image = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["images"][0]["name"]
    assert commands[0].startswith("docker build -t REGISTRY/autoprune:TAG .") and "docker push REGISTRY/autoprune:TAG" in commands[0]
    assert commands[1] == f"(cd deploy/k8s/base && kustomize edit set image {image}=REGISTRY/autoprune:TAG)"
    assert commands[2] == "kubectl apply -k deploy/k8s"
