#!/usr/bin/env bash
# Sourced by backup_now.sh, list_backups.sh and restore_backup.sh.
# Settings (all but GOFR_PROJECT have defaults):
#   GOFR_PROJECT          project name (plot, doc, iq, ...)            required
#   GOFR_BACKUP_CONTAINER the running backup container                 gofr-$GOFR_PROJECT-backup
#   GOFR_DATA_VOLUME      the data volume                              gofr-${GOFR_PROJECT}_data
#   GOFR_BACKUP_VOLUME    the backup volume                            gofr-${GOFR_PROJECT}_backups
#   GOFR_BACKUP_IMAGE     the image (restore runs a one-shot container) gofr-common-backup:latest
#   DOCKER                the docker CLI                               docker

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

if [ -z "${GOFR_PROJECT:-}" ]; then
    die "GOFR_PROJECT is not set: export GOFR_PROJECT=<project> (plot, doc, iq, ...), or use your project's wrapper script"
fi
GOFR_BACKUP_CONTAINER="${GOFR_BACKUP_CONTAINER:-gofr-$GOFR_PROJECT-backup}"
GOFR_DATA_VOLUME="${GOFR_DATA_VOLUME:-gofr-${GOFR_PROJECT}_data}"
GOFR_BACKUP_VOLUME="${GOFR_BACKUP_VOLUME:-gofr-${GOFR_PROJECT}_backups}"
GOFR_BACKUP_IMAGE="${GOFR_BACKUP_IMAGE:-gofr-common-backup:latest}"
DOCKER="${DOCKER:-docker}"

require_docker() {
    command -v "$DOCKER" >/dev/null 2>&1 || die "docker is not installed (looked for '$DOCKER')"
    "$DOCKER" info >/dev/null 2>&1 || die "cannot reach the Docker engine: is it running, and may this user use it? (try: $DOCKER info)"
}

require_running() {
    local state
    state="$("$DOCKER" inspect -f '{{.State.Running}}' "$GOFR_BACKUP_CONTAINER" 2>/dev/null)" \
        || die "container $GOFR_BACKUP_CONTAINER does not exist: start the backup service (docker-compose up -d backup) or set GOFR_BACKUP_CONTAINER"
    [ "$state" = "true" ] || die "container $GOFR_BACKUP_CONTAINER is not running: start it with docker-compose up -d backup"
}

require_volume() {
    "$DOCKER" volume inspect "$1" >/dev/null 2>&1 || die "volume $1 does not exist: check $2 (docker volume ls)"
}

# docker exec into the backup container; -t only when stdin is a terminal
exec_in_backup() {
    local tty=()
    [ -t 0 ] && [ -t 1 ] && tty=(-t)
    exec "$DOCKER" exec -i "${tty[@]}" "$GOFR_BACKUP_CONTAINER" gofr-backup "$@"
}
