#!/usr/bin/env bash
# make demo: a full backup -> list -> verify -> restore cycle on the bundled sample app.
# Works on a fresh machine: needs only what `make install` put in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin/gofr-backup"
work="$(mktemp -d "${TMPDIR:-/tmp}/gofr-demo.XXXXXX")"
trap 'rm -rf "$work"' EXIT

cp -a examples/sample-app "$work/app"
export GOFR_PROJECT=demo
export GOFR_DEMO_BACKUP_DATA_DIR="$work/app/data"
export GOFR_DEMO_BACKUP_DIR="$work/backups"
export GOFR_DEMO_BACKUP_PATHS="storage:storage,auth:auth,logs:../logs"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "gofr-backup config"
"$BIN" config
step "gofr-backup now"
"$BIN" now
step "gofr-backup list"
"$BIN" list
step "gofr-backup verify --latest"
"$BIN" verify --latest
step "sha256sum -c (the sidecar is in sha256sum format)"
(cd "$work/backups/daily" && sha256sum -c ./*.sha256)
step "gofr-backup restore --latest --target $work/restored --yes"
"$BIN" restore --latest --target "$work/restored" --yes
step "compare the restore with the source (content, modes, mtimes to the second, symlinks)"
for pair in storage:data/storage auth:data/auth logs:logs; do
    name="${pair%%:*}" src="$work/app/${pair#*:}"
    diff -r --no-dereference "$src" "$work/restored/$name"
    a="$(cd "$src" && find . -printf '%p %M %l %T@\n' | sed -E 's/\.[0-9]+$//' | sort)"
    b="$(cd "$work/restored/$name" && find . -printf '%p %M %l %T@\n' | sed -E 's/\.[0-9]+$//' | sort)"
    [ "$a" = "$b" ] || { echo "metadata differs for $name"; exit 1; }
    echo "  $name: identical ($(cd "$src" && find . | wc -l) entries)"
done
step "demo OK: the restore equals the source"
