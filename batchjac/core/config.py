"""Where batchjac keeps files between runs: one cache directory for the whole package.

``$BATCHJAC_CACHE_DIR`` when it is set (and not blank), else the user cache directory of
the platform as `platformdirs <https://platformdirs.readthedocs.io>`_ defines it:

- Linux and other Unix: ``$XDG_CACHE_HOME/batchjac`` when ``XDG_CACHE_HOME`` holds an
  absolute path, else ``~/.cache/batchjac``;
- macOS: ``$XDG_CACHE_HOME/batchjac`` likewise, else ``~/Library/Caches/batchjac``;
- Windows: ``%LOCALAPPDATA%\\batchjac\\Cache`` (the known folder, as the shell reports it).

platformdirs is a dependency rather than a copy of its rules: those rules are subtle
(relative or blank ``XDG_CACHE_HOME`` values are ignored, as the XDG specification asks;
Windows asks the shell for the folder before the environment) and they still change
(macOS follows ``XDG_CACHE_HOME`` since platformdirs 4.6), so a copy would drift from
what every other tool on the machine does. Nothing here creates the directory: whoever
writes a file there creates what it needs.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

CACHE_ENV = "BATCHJAC_CACHE_DIR"
APP_NAME = "batchjac"


def cache_dir(subfolder: str | None = None) -> Path:
    """The cache directory of batchjac, or its ``subfolder`` (e.g. ``"kernels"``).

    ``$BATCHJAC_CACHE_DIR`` (``~`` expanded) when set, else the platform's user cache
    directory for batchjac (see the module's docstring). The directory may not exist yet.

    Parameters
    ----------
    subfolder : str or None
        A relative path inside the cache directory, such as ``"kernels"`` or
        ``"kernels/sm_90"``; ``None`` for the cache directory itself.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    TypeError
        ``subfolder`` is not a string or None.
    ValueError
        ``subfolder`` is empty, absolute, or climbs out of the cache directory (``..``).

    Examples
    --------
    >>> from batchjac.core.config import cache_dir
    >>> cache_dir("kernels") == cache_dir() / "kernels"
    True
    """
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        root = Path(override).expanduser()
    else:
        # Imported here: only a call that needs a cache path pays for it.
        from platformdirs import user_cache_path

        root = user_cache_path(APP_NAME, appauthor=False)
    if subfolder is None:
        return root
    return root / _relative(subfolder)


def _relative(subfolder: object) -> PurePath:
    if not isinstance(subfolder, str):
        raise TypeError(f"subfolder: expected a string or None, got {type(subfolder).__name__}")
    path = PurePath(subfolder)
    if not subfolder.strip() or path.is_absolute() or path.anchor or ".." in path.parts:
        raise ValueError(
            f"subfolder: expected a relative path inside the cache directory, such as 'kernels', "
            f"got {subfolder!r}"
        )
    return path
