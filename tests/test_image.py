"""The image fits what runs it: the extras the Dockerfile installs cover every setting docker-compose.yml and
deploy/ hand the containers, the onnxruntime-gpu pins agree with each other and with the CUDA base, and the
compose GPU profile and .env.example say what they do.

No Docker engine runs here, so nothing is built: the files are parsed, and the extras and pins are read from
pyproject.toml (never restated here).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from collections.abc import Mapping
from urllib.parse import urlsplit

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from sqlalchemy.engine import make_url
from test_deployment import COMPOSE
from test_deployment import DEPLOYMENT_DOC
from test_deployment import DOCKERFILE
from test_deployment import ENV_EXAMPLE
from test_deployment import ROOT
from test_deployment import _content_lines
from test_deployment import dockerfile_instructions
from test_deployment import environment
from test_deployment import interpolate
from test_deployment import is_autoprune_service
from test_deployment import load_compose
from test_k8s import K8S
from test_k8s import VARIANTS
from test_k8s import render

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PYPROJECT = ROOT / "pyproject.toml"

# onnxruntime-gpu wheels on PyPI by the CUDA major they are built for (all with cuDNN 9): CUDA 12.x is the
# default from 1.19 (onnxruntime.ai, CUDA Execution Provider, "Requirements"); from 1.27 the default build is
# CUDA 13 and the CUDA 12 packages are deprecated (ORT 1.27.0 release candidates, microsoft/onnxruntime#29032).
ORT_GPU_BUILDS = {12: (Version("1.19"), Version("1.27")), 13: (Version("1.27"), None)}
ORT_GPU_RELEASES = [Version(v) for v in ("1.17.1", "1.18.1", "1.19.2", "1.20.2", "1.22.0", "1.24.4", "1.26.0", "1.27.0", "1.31.1")]


# Extras ---------------------------------------------------------------------------------------------------


def pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text())


def extra_packages() -> dict[str, set[str]]:
    """Each extra of pyproject.toml (but `dev`) -> the canonical names of the distributions it installs."""
    extras = pyproject()["project"]["optional-dependencies"]
    return {name: {canonicalize_name(Requirement(r).name) for r in reqs} for name, reqs in extras.items() if name != "dev"}


def image_extras() -> set[str]:
    """The extras of the Dockerfile's ``pip install "/src[a,b]"``."""
    specs = [m for kind, rest in dockerfile_instructions() if kind == "RUN" for m in re.findall(r"/src\[([^\]]*)\]", rest)]
    assert len(specs) == 1, f"the Dockerfile should install autoprune once from /src with its extras, found {specs}"
    return {extra.strip() for extra in specs[0].split(",") if extra.strip()}


def module_needed(key: str, value: str) -> str | None:
    """The optional module autoprune imports for one setting (None: the base install covers it)."""
    if key == "AUTOPRUNE_ARTIFACT_STORE" and urlsplit(value).scheme == "s3":
        return "boto3"  # autoprune.selection.artifacts opens s3:// stores with boto3
    if key == "AUTOPRUNE_STORAGE":
        url = make_url(value)
        return None if url.get_backend_name() == "sqlite" else url.get_dialect().driver  # psycopg, pymysql, ...
    return None


def extra_for(module: str, extras: Mapping[str, set[str]]) -> str:
    name = canonicalize_name(module)
    found = [extra for extra, dists in extras.items() if any(d == name or d.startswith(name + "-") for d in dists)]
    assert found, f"no extra of pyproject.toml installs {module}"
    return sorted(found)[0]


def compose_settings() -> list[tuple[str, str, str]]:
    """``(where, key, value)`` of every AUTOPRUNE_* variable docker-compose.yml gives an autoprune service."""
    services = load_compose()["services"]
    return [
        (f"docker-compose.yml service {name}", key, value)
        for name, svc in services.items()
        if is_autoprune_service(svc)
        for key, value in environment(svc).items()
        if key.startswith("AUTOPRUNE_")
    ]


def k8s_settings() -> list[tuple[str, str, str]]:
    """``(where, key, value)`` of every AUTOPRUNE_* value in the rendered manifests: Secrets, ConfigMaps, env."""
    out = []
    for variant in VARIANTS:
        for doc in render(variant):
            where = f"{(K8S / variant).relative_to(ROOT)} {doc['kind']} {doc['metadata']['name']}"
            if doc["kind"] in ("Secret", "ConfigMap"):
                out += [(where, k, str(v)) for k, v in {**doc.get("data", {}), **doc.get("stringData", {})}.items() if k.startswith("AUTOPRUNE_")]
            if doc["kind"] in ("Job", "Deployment", "StatefulSet"):
                for c in doc["spec"]["template"]["spec"]["containers"]:
                    out += [(where, e["name"], str(e["value"])) for e in c.get("env", []) if e["name"].startswith("AUTOPRUNE_") and "value" in e]
    return out


def missing_extras(installed: set[str], settings: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    """Extra -> the first setting that needs it, for every extra the image lacks."""
    extras = extra_packages()
    missing: dict[str, str] = {}
    for where, key, value in settings:
        module = module_needed(key, value)
        extra = extra_for(module, extras) if module else None
        if extra and extra not in installed:
            missing.setdefault(extra, f"{where}: {key}={value}")
    return missing


def test_the_image_installs_the_extras_the_shipped_settings_need() -> None:
    settings = compose_settings() + k8s_settings()
    keys = {key for _, key, _ in settings}
    assert {"AUTOPRUNE_STORAGE", "AUTOPRUNE_ARTIFACT_STORE"} <= keys, keys  # the check sees both kinds of setting
    installed = image_extras()
    assert installed <= set(extra_packages()), f"the Dockerfile names extras pyproject.toml lacks: {installed - set(extra_packages())}"
    missing = missing_extras(installed, settings)
    assert not missing, f"the image lacks extras: {missing}; add them to the Dockerfile's pip install \"/src[...]\""
    # The check catches an image that lacks one: the Kubernetes Secret's s3:// store needs the `s3` extra.
    assert "s3" in missing_extras(installed - {"s3"}, settings)


def test_module_needed_maps_urls_to_their_drivers() -> None:
    assert module_needed("AUTOPRUNE_ARTIFACT_STORE", "s3://bucket/prefix") == "boto3"
    assert module_needed("AUTOPRUNE_ARTIFACT_STORE", "file:///data/store") is None
    assert module_needed("AUTOPRUNE_STORAGE", "sqlite:///x.db") is None
    extras = extra_packages()
    assert extra_for(module_needed("AUTOPRUNE_STORAGE", "postgresql://u:p@h/db") or "", extras) == "postgres"
    assert extra_for(module_needed("AUTOPRUNE_STORAGE", "mysql+pymysql://u:p@h/db") or "", extras) == "mysql"


# onnxruntime-gpu pins -----------------------------------------------------------------------------------


def gpu_pins() -> dict[str, Requirement]:
    """Where the GPU image's ONNX Runtime is named -> that requirement."""
    extra = pyproject()["project"]["optional-dependencies"]["gpu"]
    gpu_service = load_compose()["services"]["worker-gpu"]
    docker = re.findall(r"--build-arg ORT_PACKAGE=(?:'([^']+)'|(\S+))", DOCKERFILE.read_text())
    assert len(extra) == 1 and len(docker) == 1, (extra, docker)
    pins = {
        "pyproject.toml [gpu]": extra[0],
        "docker-compose.yml worker-gpu ORT_PACKAGE": interpolate(str(gpu_service["build"]["args"]["ORT_PACKAGE"]), {}),
        "Dockerfile (build example)": docker[0][0] or docker[0][1],
    }
    for path in (DEPLOYMENT_DOC, ENV_EXAMPLE):
        for i, found in enumerate(re.findall(r"onnxruntime-gpu[<>=!~][^'`\s]*", path.read_text())):
            pins[f"{path.name} #{i + 1}"] = found
    return {where: Requirement(text) for where, text in pins.items()}


def gpu_cuda_major() -> int:
    """The CUDA major of the compose GPU image: its base image and its torch wheels must agree."""
    args = {k: interpolate(str(v), {}) for k, v in load_compose()["services"]["worker-gpu"]["build"]["args"].items()}
    base = re.search(r"cuda:(\d+)\.", args["BASE_IMAGE"])
    torch = re.search(r"/cu(\d+)\d$", args["TORCH_INDEX_URL"])
    assert base and torch, args
    assert base.group(1) == torch.group(1), f"CUDA {base.group(1)} base with cu{torch.group(1)}x torch wheels"
    return int(base.group(1))


def test_the_gpu_onnxruntime_pins_agree_and_match_the_cuda_base() -> None:
    pins = gpu_pins()
    specs = {str(req.specifier) for req in pins.values()}
    assert {req.name for req in pins.values()} == {"onnxruntime-gpu"} and len(specs) == 1, f"the pins disagree: {pins}"
    spec = next(iter(pins.values())).specifier
    low, high = ORT_GPU_BUILDS[gpu_cuda_major()]
    admitted = [v for v in ORT_GPU_RELEASES if v in spec]
    assert admitted, f"{spec} admits no onnxruntime-gpu release"
    wrong = [str(v) for v in admitted if v < low or (high is not None and v >= high)]
    assert not wrong, f"onnxruntime-gpu{spec} admits {wrong}, not built for the image's CUDA {gpu_cuda_major()} (cuDNN 9)"
    assert any(where.startswith(DEPLOYMENT_DOC.name) for where in pins), "docs/deployment.md must state the pin"


# Compose: the GPU profile and .env.example -----------------------------------------------------------


def test_env_example_offers_every_variable_compose_reads() -> None:
    read = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text()))
    offered = {line.split("=", 1)[0].strip() for _, line in _content_lines(ENV_EXAMPLE)}
    assert read == offered, f"compose reads but .env.example lacks {sorted(read - offered)}; offered but unread {sorted(offered - read)}"
    assert {"AUTOPRUNE_GPUS", "CUDA_BASE_IMAGE", "CUDA_TORCH_INDEX_URL", "AUTOPRUNE_GPU_IMAGE"} <= offered


_GPU_UP = re.compile(r"(?m)^[ \t#]*(?:[A-Z_]+=\S*[ \t]+)*docker compose --profile gpu up\b.*$")


def test_the_gpu_profile_command_says_what_it_starts() -> None:
    """A profile adds services: every documented `--profile gpu up` also scales the CPU workers to zero."""
    services = load_compose()["services"]
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    cpu_workers = [name for name, svc in services.items() if not svc.get("profiles") and str(svc.get("command", [""])[0]) == "worker"]
    assert cpu_workers == ["worker"], cpu_workers
    commands = [
        (path.name, m.group(0)) for path in (DEPLOYMENT_DOC, ENV_EXAMPLE, COMPOSE, ROOT / "README.md") for m in _GPU_UP.finditer(path.read_text())
    ]
    assert commands, "no `docker compose --profile gpu up` command is documented"
    for where, command in commands:
        assert "--scale worker=0" in command, f"{where}: `{command.strip()}` starts the CPU workers too"
    assert "also starts the CPU `worker` service" in DEPLOYMENT_DOC.read_text()
