# autoprune worker image: one image for the `init` (autoprune create), `worker` and `dashboard` services of
# docker-compose.yml and the pods of deploy/k8s, or for any single `autoprune ...` command.
#
#   docker build -t autoprune .                                   # CPU torch (the default)
#   docker build -t autoprune:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#     --build-arg ORT_PACKAGE='onnxruntime-gpu>=1.20,<1.27' .
#
# On a CUDA image the torch stages run on the GPU (study key `device: auto`), and ORT_PACKAGE adds the CUDA and
# TensorRT execution providers for `latency.provider: cuda | tensorrt` (docs/deployment.md, "GPU workers").
# The onnxruntime-gpu range is the one built for CUDA 12.x and cuDNN 9.x, the CUDA major of the base above
# (1.27 and later need CUDA 13); it is the same as pyproject.toml's `gpu` extra and docker-compose.yml's.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# The torch requirement and the index it comes from (CPU wheels by default; cu128 etc. for CUDA bases).
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# The ONNX Runtime wheel: onnxruntime (CPU provider) or onnxruntime-gpu (CUDA, TensorRT and the CPU provider),
# as a requirement with its version range ('onnxruntime-gpu>=...,<...', see above).
ARG ORT_PACKAGE=onnxruntime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    AUTOPRUNE_LOCK_DIR=/locks \
    MPLBACKEND=Agg

# CUDA and other distribution bases may come without Python (or without venv); python:*-slim has both.
# A virtual environment keeps pip away from the distribution's Python (PEP 668).
RUN set -eux; \
    if ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv python3-pip; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -m venv "$VIRTUAL_ENV"; \
    pip install --upgrade pip

# torch first, in its own layer: it is by far the largest download and changes least often.
RUN pip install --index-url "$TORCH_INDEX_URL" $TORCH_SPEC

# autoprune with what docker-compose.yml and deploy/k8s use: the PostgreSQL drivers (`postgres`) and boto3 for
# an s3:// artifact store (`s3`); torch>=2.1 is already satisfied by the layer above.
COPY pyproject.toml README.md /src/
COPY autoprune /src/autoprune
RUN pip install "/src[postgres,s3]" && rm -rf /src

# Both ORT wheels ship the same `onnxruntime` module: the GPU one replaces the CPU one, never sits beside it.
RUN if [ "$ORT_PACKAGE" != "onnxruntime" ]; then pip uninstall -y onnxruntime && pip install "$ORT_PACKAGE"; fi

# Study files are baked in (docker-compose.yml also mounts ./studies over them, read-only).
COPY studies /app/studies

# An unprivileged user; /data (artifacts, base checkpoint, latency cache) and /locks (the host-wide timing
# lock) belong to it, and named volumes mounted there start with this ownership.
RUN set -eux; \
    groupadd --system --gid 10001 autoprune; \
    useradd --system --uid 10001 --gid autoprune --home-dir /home/autoprune --create-home --shell /usr/sbin/nologin autoprune; \
    mkdir -p /data /locks; \
    chown autoprune:autoprune /data /locks
USER autoprune:autoprune
# Relative outputs (autoprune demo, export -o arch.json) land in the data volume.
WORKDIR /data

ENTRYPOINT ["autoprune"]
CMD ["--help"]
