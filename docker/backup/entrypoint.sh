#!/bin/sh
# Entrypoint of the gofr-common-backup image.
#   no arguments: run the scheduled service
#   arguments:    run `gofr-backup ARGS` (e.g. `docker run ... gofr-common-backup:latest now`)
set -eu

me="$(id -u):$(id -g)"

if [ -z "${GOFR_PROJECT:-}" ]; then
    echo "gofr-backup: GOFR_PROJECT is not set: add GOFR_PROJECT=<project> (plot, doc, iq, ...) to the backup service's environment" >&2
    exit 1
fi

# GOFR_{P}_BACKUP_DATA_DIR / _DIR, as config.py reads them
P="$(printf '%s' "$GOFR_PROJECT" | tr 'a-z-' 'A-Z_')"
data="$(printenv "GOFR_${P}_BACKUP_DATA_DIR" || echo /data)"
backups="$(printenv "GOFR_${P}_BACKUP_DIR" || echo /backups)"

need_readable() {  # dir, what
    if [ ! -d "$1" ] || [ ! -r "$1" ] || [ ! -x "$1" ]; then
        echo "gofr-backup: $1 is not readable by uid:gid $me: mount the $2 volume at $1 and make it readable by $me" >&2
        exit 1
    fi
}
need_writable() {  # dir, what
    need_readable "$1" "$2"
    probe="$1/.gofr-write-probe.$$"
    if ! (: > "$probe") 2>/dev/null; then
        echo "gofr-backup: $1 is not writable by uid:gid $me: mount the $2 volume read-write at $1 and make it writable by $me (e.g. chown $me)" >&2
        exit 1
    fi
    rm -f "$probe"
}

cmd="${1:-run}"
case "$cmd" in
    run|now|prune|check-source)
        need_readable "$data" "data"
        need_writable "$backups" "backup"
        ;;
    drill)
        need_writable "$backups" "backup"
        ;;
    restore)
        need_readable "$backups" "backup"
        case " $* " in
            *" --dry-run "*) ;;
            *) need_writable "$data" "data" ;;
        esac
        ;;
esac

if [ $# -eq 0 ]; then
    exec gofr-backup run
fi
exec gofr-backup "$@"
