#!/usr/bin/env bash
# Restore a backup into the data volume.
#   usage: restore_backup.sh (NAME|--latest|--interactive) [--yes] [--only N1,N2] [--dry-run]
#                            [--allow-incomplete] [--stop-services "svc1 svc2"]
# --latest is the newest archive that is complete and verified; an incomplete archive (some files
# could not be read) is restored only by NAME with --allow-incomplete, and what it never saved is
# left as it is.
# The backup service mounts the data volume read-only, so this runs a one-shot container of the
# same image: data volume read-write, backup volume read-only, as root (so that owners and modes
# come back as they were), no network, a TTY only when stdin is a terminal. It uses the backup
# container's GOFR_* settings (PATHS etc.), so names map back to the same paths.
# Stop the app services first, or pass --stop-services with their compose service names: they are
# stopped before and started again after the restore (run it from the compose project directory).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=_common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_common.sh"

usage="usage: $(basename "$0") (NAME|--latest|--interactive) [--yes] [--only N1,N2] [--dry-run] [--allow-incomplete] [--stop-services \"svc ...\"]"
args=() services="" selector="" dry=""
while [ $# -gt 0 ]; do
    case "$1" in
        --stop-services) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; services="$2"; shift 2 ;;
        --latest|--interactive) selector="$1"; args+=("$1"); shift ;;
        --only) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; args+=("$1" "$2"); shift 2 ;;
        --dry-run) dry=1; args+=("$1"); shift ;;
        --yes|-y|--allow-incomplete) args+=("$1"); shift ;;
        -h|--help) echo "$usage"; exit 0 ;;
        -*) echo "$(basename "$0"): unknown option '$1'; $usage" >&2; exit 2 ;;
        *) [ -z "$selector" ] || { echo "$usage" >&2; exit 2; }; selector="$1"; args+=("$1"); shift ;;
    esac
done
[ -n "$selector" ] || { echo "$(basename "$0"): say which backup: NAME, --latest or --interactive; $usage" >&2; exit 2; }

require_docker
require_volume "$GOFR_DATA_VOLUME" GOFR_DATA_VOLUME
require_volume "$GOFR_BACKUP_VOLUME" GOFR_BACKUP_VOLUME
"$DOCKER" image inspect "$GOFR_BACKUP_IMAGE" >/dev/null 2>&1 \
    || die "image $GOFR_BACKUP_IMAGE is not present: build it (docker build -f docker/backup/Dockerfile -t $GOFR_BACKUP_IMAGE .) or set GOFR_BACKUP_IMAGE"

# the backup container's settings, so that names map back to the same paths
envfile="$(mktemp)"
trap 'rm -f "$envfile"' EXIT
if "$DOCKER" inspect "$GOFR_BACKUP_CONTAINER" >/dev/null 2>&1; then
    "$DOCKER" inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$GOFR_BACKUP_CONTAINER" \
        | grep -E '^(GOFR_|TZ=)' > "$envfile" || true
else
    env | grep -E '^(GOFR_PROJECT|GOFR_[A-Z0-9_]+_BACKUP_[A-Z_]+|TZ)=' > "$envfile" || true
fi
grep -q '^GOFR_PROJECT=' "$envfile" || echo "GOFR_PROJECT=$GOFR_PROJECT" >> "$envfile"

compose() {
    if "$DOCKER" compose version >/dev/null 2>&1; then "$DOCKER" compose "$@"; else docker-compose "$@"; fi
}
if [ -z "$dry" ]; then
    if [ -n "$services" ]; then
        echo "Stopping $services ..." >&2
        # shellcheck disable=SC2086
        compose stop $services
        # shellcheck disable=SC2086
        trap 'rm -f "$envfile"; echo "Starting $services ..." >&2; compose start $services' EXIT
    else
        echo "Restoring into volume $GOFR_DATA_VOLUME: stop the app services first (or pass --stop-services \"...\")." >&2
    fi
fi

tty=()
[ -t 0 ] && tty=(-t)
"$DOCKER" run --rm -i "${tty[@]}" --pull never --user 0:0 --network none \
    --env-file "$envfile" \
    -v "$GOFR_DATA_VOLUME:/data" \
    -v "$GOFR_BACKUP_VOLUME:/backups:ro" \
    "$GOFR_BACKUP_IMAGE" restore "${args[@]}"
