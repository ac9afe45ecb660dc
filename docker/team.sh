#!/usr/bin/env bash
# The replicated stack, docker-compose.team.yml (two gateways, two playgrounds, workers, PostgreSQL,
# Redis, a Caddy proxy with sticky sessions):
#
#   docker/team.sh up     `make team-up`: build conductor:latest (incrementally), bring the stack up
#                         healthy, print its URLs. Reads .env as docker-compose.yml does.
#   docker/team.sh down   `make team-down`: stop and remove its containers (volumes stay).
#   docker/team.sh test   `make team-test`: the same stack under another project name, on free
#                         loopback ports, checked by docker/team.py; removed afterwards, with the
#                         dockerd this run started, also on failure.
#
# The engine, Compose v2, the stand-in base images and the build are docker/lib.sh's, shared with
# docker/smoke-test.sh. The worker service runs `python -m conductor_core.worker`; while that
# module is not in this tree it is left out (scaled to 0), and the test says it skipped it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=docker/lib.sh
. docker/lib.sh

MODE=${1:-}
case "$MODE" in up | down | test) ;; *) echo "usage: $0 up|down|test" >&2; exit 2 ;; esac
PY=${PY:-.venv/bin/python}
IMAGE=conductor:latest
COMPOSE_VENV=${DOCKER_TEST_VENV:-.venv-docker}
WORK=$(mktemp -d /tmp/conductor-team.XXXXXX)
DOCKER=docker
COMPOSE=()
STACK_UP=

cleanup() {
    local rc=$?
    set +e
    if [ "$MODE" = test ]; then
        if [ -n "$STACK_UP" ] && "$DOCKER" info >/dev/null 2>&1; then
            if [ $rc -ne 0 ]; then
                "${COMPOSE[@]}" ps -a --format '{{.Service}}: {{.Status}}' >&2
                "${COMPOSE[@]}" logs --no-color --tail 30 >"$WORK/compose.log" 2>&1
                tail -n 80 "$WORK/compose.log" >&2
            fi
            "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1
        fi
        stop_started_dockerd
    elif [ -n "$DOCKERD_PID" ]; then
        echo "the dockerd started here keeps running (pid $DOCKERD_PID, log $WORK/dockerd.log)"
    fi
    [ -n "$DOCKERD_PID" ] && [ "$MODE" != test ] || rm -rf "$WORK"
    [ $rc -eq 0 ] || echo "team-$MODE FAILED (exit $rc)" >&2
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Whether the worker can run: its module is in the tree the image is built from.
has_worker() { "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("conductor_core.worker") is None)' 2>/dev/null; }

step "Docker engine"
docker_engine
docker_compose

if [ "$MODE" = down ]; then
    COMPOSE+=(-p conductor-team -f docker-compose.team.yml)
    CONDUCTOR_API_KEY=${CONDUCTOR_API_KEY:-unused-by-down} "${COMPOSE[@]}" down --remove-orphans
    exit 0
fi

[ -x "$PY" ] || fail "$PY is missing: run make install-dev first"
if [ "$MODE" = test ]; then
    COMPOSE+=(-p conductor-team-test -f docker-compose.team.yml -f docker/team/test.yml)
    export CONDUCTOR_API_KEY="team-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    export POSTGRES_PASSWORD="pg-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
    export REDIS_PASSWORD="redis-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
    export CONDUCTOR_TEAM_PLAYGROUND_PUBLISH=127.0.0.1: CONDUCTOR_TEAM_GATEWAY_PUBLISH=127.0.0.1:
    # What test.yml requires, for `config` and `build` (docker/team.py sets the real ones for `up`).
    export TEAM_TEST_UPSTREAM_KEY=unset TEAM_TEST_OPENAI_BASE_URL=unset TEAM_TEST_ANTHROPIC_BASE_URL=unset
    "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true   # left by an interrupted run
else
    COMPOSE+=(-p conductor-team -f docker-compose.team.yml)
    if [ -z "${CONDUCTOR_API_KEY:-}" ] && ! grep -qs '^CONDUCTOR_API_KEY=.' .env; then
        fail "set CONDUCTOR_API_KEY (the gateways' bearer key) in .env or the environment"
    fi
fi
echo "compose: $("${COMPOSE[@]}" version --short)"

step "Base images"
t=$(now)
base_images
T_BASES=$(since "$t")

step "Build $IMAGE"
t=$(now)
build_image
T_BUILD=$(since "$t")
echo "built in $T_BUILD s ($(grep -c ' CACHED$' "$WORK/build.log" || true) steps from the cache)"

scale=() no_worker=()
if ! has_worker; then
    echo "conductor_core.worker is not in this tree: the worker service is left out (scaled to 0)"
    scale=(--scale worker=0) no_worker=(--no-worker)
fi

if [ "$MODE" = test ]; then
    step "The replicated stack, checked (docker/team.py)"
    STACK_UP=1
    t=$(now)
    "$PY" docker/team.py test "${no_worker[@]}" --docker "$DOCKER" -- "${COMPOSE[@]}"
    T_TEST=$(since "$t")
    step "docker compose down -v"
    "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1
    STACK_UP=
    left=$("$DOCKER" ps -aq --filter "label=com.docker.compose.project=conductor-team-test")
    [ -z "$left" ] || fail "containers left after down: $left"
    step "Summary"
    printf 'base images ... %s s\nbuild ......... %s s\nup + checks ... %s s\n' "$T_BASES" "$T_BUILD" "$T_TEST"
    echo "team-test passed"
    exit 0
fi

step "docker compose up -d --wait"
t=$(now)
"${COMPOSE[@]}" up -d --wait --wait-timeout 600 "${scale[@]}" || fail "the stack did not come up healthy (docker compose -p conductor-team -f docker-compose.team.yml logs)"
echo "healthy after $(since "$t") s"
"${COMPOSE[@]}" ps --format '{{.Service}}: {{.Status}}'
playground=$("$PY" docker/smoke.py published "$("${COMPOSE[@]}" port proxy 8080)")
gateway=$("$PY" docker/smoke.py published "$("${COMPOSE[@]}" port proxy 8000)")
cat <<EOF

Playground (sticky, both replicas): $playground
Gateway (OpenAI-compatible, both replicas): $gateway/v1   (docs: $gateway/docs)
Stop it with: make team-down
EOF
