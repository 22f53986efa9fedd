# syntax=docker/dockerfile:1
# The Tandem image: the router, the Ray head and the Ray workers all run it (helm/tandem).
#
#   docker build -t tandem-serve:0.1.0 .
#
# torch comes first and pinned, as in the Makefile. With no TORCH_INDEX_URL pip resolves it
# from the default index; pass a PyTorch wheel index for the CPU build (small) or a CUDA
# build (for accelerator=nvidia):
#
#   docker build --build-arg TORCH_INDEX_URL=<PyTorch CPU or CUDA wheel index> -t tandem-serve:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL
ARG LMCACHE_VERSION=0.5.6
# The Ray the chart declares (helm/tandem values.yaml ray.version): KubeRay picks its probes by it.
ARG RAY_VERSION=2.60.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# A bare `torch` requirement would resolve to a multi-GB CUDA build: pin it, install it first.
RUN python -m venv /opt/venv \
 && if [ -n "$TORCH_INDEX_URL" ]; then \
      pip install --no-cache-dir "torch==${TORCH_VERSION}" --extra-index-url "$TORCH_INDEX_URL"; \
    else \
      pip install --no-cache-dir "torch==${TORCH_VERSION}"; \
    fi
WORKDIR /src
# Ray at the chart's version; LMCache without its CUDA and cloud dependencies (README:
# "Installing LMCache without CUDA").
COPY requirements/ requirements/
RUN pip install --no-cache-dir "ray[default]==${RAY_VERSION}" -r requirements/lmcache-cpu.txt \
 && pip install --no-cache-dir --no-deps "lmcache==${LMCACHE_VERSION}"
COPY . .
# The project and its dependencies; the bundled default model ships as package data.
RUN pip install --no-cache-dir . \
 && python -c "import pathlib, engine; m = pathlib.Path(engine.__file__).parent / 'models/stories260K/model.safetensors'; assert m.is_file(), m"

FROM ${PYTHON_IMAGE} AS runtime
# A C compiler: the engine builds its native CPU kernels (engine/csrc) on the node it runs on
# (-march=native), on first use; without one it logs a warning and uses torch attention.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 1000 tandem \
 && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash tandem
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    RAY_AUTH_MODE=disabled \
    LMCACHE_TRACK_USAGE=false \
    DO_NOT_TRACK=1
USER 1000:1000
WORKDIR /home/tandem
EXPOSE 50051
# Standalone: an embedded Ray and both pools in one container, without the Redis prefix
# store (the image has no redis-server). On Kubernetes the chart sets every command.
CMD ["tandem", "serve", "--set", "router.host=0.0.0.0", "--set", "store.enabled=false"]
