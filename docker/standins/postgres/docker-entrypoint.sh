#!/bin/sh
# The official postgres image's start-up, as far as docker-compose.yml relies on it: on an empty
# data directory, create the cluster with POSTGRES_USER (superuser, default "postgres"),
# POSTGRES_PASSWORD (required) and POSTGRES_DB (default: the user's name); then run the server.
set -eu

if [ "${1:-}" = postgres ] || [ "${1#-}" != "${1:-}" ]; then
    [ "${1:-}" = postgres ] && shift
    : "${POSTGRES_USER:=postgres}"
    : "${POSTGRES_DB:=$POSTGRES_USER}"
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        if [ -z "${POSTGRES_PASSWORD:-}" ]; then
            echo "error: the database is not initialized and POSTGRES_PASSWORD is not set: set it (docker run -e POSTGRES_PASSWORD=...)" >&2
            exit 1
        fi
        pwfile=$(mktemp)
        printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
        # Local socket: trust (pg_isready, psql in the container); TCP: passwords, as the official image.
        initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
            --encoding=UTF8 -D "$PGDATA" >/dev/null
        rm -f "$pwfile"
        printf '\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
        printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
        if [ "$POSTGRES_DB" != postgres ]; then
            quoted=$(printf '%s' "$POSTGRES_DB" | sed 's/"/""/g')
            # Single-user mode: no server listens (and so no health check passes) before it is ready.
            printf 'CREATE DATABASE "%s";\n' "$quoted" | postgres --single -D "$PGDATA" postgres >/dev/null
        fi
        echo "database initialized: user $POSTGRES_USER, database $POSTGRES_DB"
    fi
    exec postgres "$@"
fi

exec "$@"
