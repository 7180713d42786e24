"""Where things are: the repository's deploy/local folder and the download cache."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The monorepo root: $HUB_REPO_ROOT, else the first parent of this file (or of the current
    directory) that holds deploy/local."""
    env = os.environ.get("HUB_REPO_ROOT")
    if env:
        return Path(env).resolve()
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        for parent in (start, *start.parents):
            if (parent / "deploy" / "local").is_dir():
                return parent
    raise FileNotFoundError("cannot find the repository root (a folder with deploy/local); set HUB_REPO_ROOT")


def deploy_dir() -> Path:
    """deploy/local in the repository."""
    return repo_root() / "deploy" / "local"


def cache_dir() -> Path:
    """Download cache: $HUB_CACHE_DIR, default ~/.cache/synchub."""
    env = os.environ.get("HUB_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "synchub"
