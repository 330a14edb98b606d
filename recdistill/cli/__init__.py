"""The `recdistill` console script."""

from recdistill.cli.main import app

__all__ = ["app"]
