#!/usr/bin/env bash
# List backups, by tier, from the running backup container.   usage: list_backups.sh [--json]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=_common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_common.sh"

case "${1:-}" in
    ""|--json) ;;
    -h|--help) echo "usage: $(basename "$0") [--json]"; exit 0 ;;
    *) echo "$(basename "$0"): unknown option '$1' (usage: $(basename "$0") [--json])" >&2; exit 2 ;;
esac
require_docker
require_running
exec_in_backup list "$@"
