"""The current project of the command line: ``--project`` over ``KAWA_PROJECT`` over ``kawa use`` over ``default``.

``kawa use NAME`` writes the name to ``<home>/current-project``; the shell's ``KAWA_PROJECT`` (read through
:func:`kawa.config.shell_environment`) overrides it, and a command's ``--project`` overrides both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from kawa.projects.core import DEFAULT_PROJECT, check_name

CURRENT_FILE = "current-project"


class Current(NamedTuple):
    name: str
    source: str  # "--project", "KAWA_PROJECT", the `kawa use` file's path, or "default"


def current_file(home: Path) -> Path:
    return Path(home) / CURRENT_FILE


def current_project(home: Path, flag: str | None = None, env_project: str | None = None) -> Current:
    """Which project a command acts in, and where that came from."""
    if flag:
        return Current(check_name(flag), "--project")
    if env_project:
        return Current(check_name(env_project), "KAWA_PROJECT")
    path = current_file(home)
    try:
        written = path.read_text().strip()
    except FileNotFoundError:
        written = ""
    if written:
        return Current(check_name(written), str(path))
    return Current(DEFAULT_PROJECT, "default")


def use_project(home: Path, name: str) -> Path:
    """Make ``name`` the current project of this home (``kawa use``); returns the file written."""
    path = current_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(check_name(name) + "\n")
    tmp.replace(path)
    return path
