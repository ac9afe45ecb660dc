#!/usr/bin/env bash
# Make sure the base images that Dockerfile and docker-compose.yml name exist locally:
# pull each one, and only when that fails (no registry reachable, as on the project's CI
# machines) build a stand-in from Debian's packages under the same name. The project's files
# stay standard: a user with a registry gets the official images.
#
#   docker/standins/ensure-images.sh python:3.11-slim postgres:17-alpine redis:7-bookworm caddy:2
#
# Needs root (debootstrap), debootstrap and a Debian mirror (the one apt uses). DOCKER may name
# the docker client to use.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
DOCKER="${DOCKER:-docker}"
BASE=conductor-standin/debian:bookworm

log() { printf '[standins] %s\n' "$*" >&2; }

ROOTFS=
BUILD_LOG=$(mktemp)
trap 'rm -rf "$BUILD_LOG" ${ROOTFS:+"$ROOTFS"} ${ROOTFS:+"$ROOTFS.log"}' EXIT

# The mirror apt already uses (deb822 .sources or one-line lists), so a proxy or a local
# mirror configured for apt works here too.
debian_mirror() {
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
    [ -n "$uri" ] || uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -v security | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

# A minimal Debian 12 root file system as an image, slimmed the way Debian's -slim images are,
# trusting the host's extra CAs (pip in a build must reach PyPI through the same proxy as here).
build_base() {
    local root mirror
    command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install debootstrap"; exit 1; }
    mirror=$(debian_mirror)
    root=$(mktemp -d /tmp/conductor-standin-rootfs.XXXXXX)
    ROOTFS=$root
    log "debootstrap --variant=minbase bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 \
        || { tail -n 20 "$root.log" >&2; rm -f "$root.log"; log "debootstrap failed"; exit 1; }
    rm -f "$root.log"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/man/* \
        "$root"/usr/share/info/* "$root"/usr/share/locale/*
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
    # As in Debian's official images: apt keeps no package caches or downloaded .debs in a layer.
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
Acquire::GzipIndexes "true";
EOF
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        mkdir -p "$root/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
        log "the stand-ins trust the host's extra CAs: $(cd /usr/local/share/ca-certificates && echo *.crt)"
    fi
    tar -C "$root" -c . | "$DOCKER" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' - "$BASE" >/dev/null
    rm -rf "$root"
    log "built $BASE"
}

standin_dir() {
    case "$1" in
        python:3.11-slim) echo "$HERE/python" ;;
        postgres:17-alpine) echo "$HERE/postgres" ;;
        redis:7-bookworm) echo "$HERE/redis" ;;
        caddy:2) echo "$HERE/caddy" ;;
        *) return 1 ;;
    esac
}

ensure() {
    local image=$1 dir
    if "$DOCKER" image inspect "$image" >/dev/null 2>&1; then
        # A stand-in from an earlier run gives way to the real image as soon as one can be pulled.
        if [ -z "$("$DOCKER" image inspect -f '{{index .Config.Labels "conductor.standin"}}' "$image")" ]; then
            log "$image: present"
            return
        fi
        if "$DOCKER" pull -q "$image" >/dev/null 2>&1; then log "$image: pulled (replaces the stand-in)"; return; fi
        log "$image: stand-in present"
        return
    fi
    if "$DOCKER" pull -q "$image" >/dev/null 2>&1; then log "$image: pulled"; return; fi
    dir=$(standin_dir "$image") || { log "$image cannot be pulled and has no stand-in in $HERE"; exit 1; }
    log "$image cannot be pulled: building a stand-in from Debian's packages ($dir)"
    "$DOCKER" image inspect "$BASE" >/dev/null 2>&1 || build_base
    "$DOCKER" build -t "$image" "$dir" >"$BUILD_LOG" 2>&1 \
        || { tail -n 30 "$BUILD_LOG" >&2; log "$image: the stand-in build failed"; exit 1; }
    log "$image: stand-in built"
}

[ $# -gt 0 ] || { echo "usage: $0 IMAGE..." >&2; exit 2; }
for image in "$@"; do
    ensure "$image"
done
