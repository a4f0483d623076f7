#!/bin/bash
# gofr-plot's wrapper around the shared gofr-common backup script of the same name.
export GOFR_PROJECT=plot
export GOFR_BACKUP_CONTAINER="${GOFR_BACKUP_CONTAINER:-gofr-plot-backup}"
export GOFR_DATA_VOLUME="${GOFR_DATA_VOLUME:-gofr-plot_data}"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# in a real project: "${SCRIPT_DIR}/../../gofr-common/scripts/backup"
COMMON_BACKUP_DIR="${GOFR_COMMON_BACKUP_DIR:-${SCRIPT_DIR}/../../../scripts/backup}"

exec "${COMMON_BACKUP_DIR}/$(basename "$0")" "$@"
