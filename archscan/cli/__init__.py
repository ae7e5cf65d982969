"""archscan command line (entry point ``archscan.cli:main``)."""
from archscan.cli.main import main

__all__ = ["main"]
