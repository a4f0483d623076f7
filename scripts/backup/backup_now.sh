#!/usr/bin/env bash
# Make a backup now, in the running backup container.   usage: backup_now.sh [daily|weekly|monthly]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=_common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_common.sh"

tier="${1:-daily}"
case "$tier" in
    daily|weekly|monthly) ;;
    -h|--help) echo "usage: $(basename "$0") [daily|weekly|monthly]"; exit 0 ;;
    *) echo "$(basename "$0"): unknown tier '$tier': use daily, weekly or monthly" >&2; exit 2 ;;
esac
require_docker
require_running
exec_in_backup now --tier "$tier"
