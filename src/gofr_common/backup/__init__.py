"""gofr_common.backup: the shared backup system for GOFR services.

from gofr_common.backup import BackupConfig, BackupService
config = BackupConfig.from_env(project_name="plot")
path = BackupService(config).create_backup(tier="daily")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["BackupConfig", "BackupService", "__version__"]

if TYPE_CHECKING:
    from .config import BackupConfig
    from .service import BackupService


def __getattr__(name: str) -> Any:  # lazy, so that `gofr-backup status` starts fast
    if name == "BackupConfig":
        from .config import BackupConfig

        return BackupConfig
    if name == "BackupService":
        from .service import BackupService

        return BackupService
    raise AttributeError(name)
