"""gofr-common: shared infrastructure for GOFR services."""
