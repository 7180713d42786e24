"""A git ref as the bench's baseline: its tree checked out as a git worktree with its own locked venv.

Why: figures taken on another day, under another load, cannot be divided by each other on this shared
machine; the same scenarios run in one `make bench` on the same broker and database, once with the
baseline tree's services and once with the current tree's, can. `make bench BASE=<ref>` (env
`HUB_BENCH_BASELINE_REF`) sets it; `BASE=d57f9af` is the commit before issue 16's redesign.

The worktree lives in `var/bench/trees/<sha>` (cached by commit: a second run with the same ref reuses it),
detached at the commit, with `uv sync --locked` run inside it, so its services start from its own code
and its own dependency versions. Only the service processes come from the baseline tree; the bench
itself (producer, collector, seeds, events) is the current tree's, so both trees get the very same input.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import harness as h

TREES = h.ROOT / "var" / "bench" / "trees"
DEFAULT_REF = "d57f9af"
"""The commit before issue 16's redesign (what `make bench BASE=` would typically be given)."""
READY = ".hub-bench-ready"


@dataclass(frozen=True)
class Tree:
    """Where a service process's code comes from: a checkout and the Python of its venv."""

    label: str  # "new" or "old"
    root: Path
    python: Path
    ref: str = ""
    sha: str = ""

    def group_id(self, prefix: str, service: str) -> str:
        """The consumer group this tree's service joins: under the topic prefix since the commit that added
        `KafkaSettings.group_id`, the bare service name before it."""
        settings = self.root / "libs" / "platform" / "src" / "hub_platform" / "settings.py"
        return f"{prefix}{service}" if "def group_id(" in settings.read_text() else service

    def cmd(self, module_or_code: str) -> list[str]:
        if module_or_code.startswith("-c "):
            return [str(self.python), "-c", module_or_code[3:]]
        return [str(self.python), "-m", module_or_code]


CURRENT = Tree("new", h.ROOT, Path(sys.executable))


def git(*args: str, cwd: Path = h.ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def resolve(ref: str) -> str:
    """The full commit sha of `ref` (a branch, tag, short or full sha); ValueError if it names no commit."""
    try:
        return git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except subprocess.CalledProcessError as exc:
        raise ValueError(f"{ref!r} names no commit in {h.ROOT}") from exc


def _clean_env() -> dict[str, str]:
    """uv must sync the worktree's own .venv, not the venv the bench runs in."""
    return {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH")}


def uv_command() -> list[str]:
    """`uv` if on PATH, else `python3 -m uv` (how the Makefile finds it)."""
    exe = shutil.which("uv")
    return [exe] if exe else ["python3", "-m", "uv"]


def checkout(ref: str, trees: Path = TREES) -> Tree:
    """The worktree of `ref` with its venv synced (made once per commit, reused afterwards)."""
    sha = resolve(ref)
    root = trees / sha
    if not (root / READY).exists():
        trees.mkdir(parents=True, exist_ok=True)
        if root.exists():  # a half-made tree (interrupted): start again
            subprocess.run(["git", "worktree", "remove", "--force", str(root)], cwd=h.ROOT, capture_output=True)
            shutil.rmtree(root, ignore_errors=True)
        git("worktree", "prune")
        h.log(f"baseline {ref}: git worktree of {sha[:12]} in {root}")
        git("worktree", "add", "--detach", str(root), sha)
        h.log(f"baseline {ref}: uv sync --locked in {root} (its own venv)")
        subprocess.run([*uv_command(), "sync", "--locked", "--quiet"], cwd=root, env=_clean_env(), check=True)
        (root / READY).write_text(f"{ref} {sha}\n")
    python = root / ".venv" / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"baseline tree {root} has no venv ({python}); remove the directory and run again")
    return Tree("old", root, python, ref, sha)


def describe(tree: Tree) -> str:
    subject = git("log", "-1", "--format=%s", tree.sha) if tree.sha else ""
    return f"{tree.ref} = {tree.sha[:12]} ({subject[:80]})" if tree.sha else "the current tree"
