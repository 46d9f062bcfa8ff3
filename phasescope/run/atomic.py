"""Crash-safe writes: files and directories appear under their final name only when complete.

Every writer first fills a temporary sibling named ``.tmp-<final name>-<uuid>``, flushes it to disk,
and then renames it into place, so a reader (or a resumed run) never sees a half-written checkpoint
or metric shard. A writer killed mid-way leaves only a ``.tmp-*`` entry, which
:func:`remove_stale_temporaries` deletes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from phasescope.errors import PhasescopeError

TEMPORARY_PREFIX = ".tmp-"


def _temporary_sibling(final: Path) -> Path:
    """A fresh, unique temporary path next to ``final``; it never ends in ``final``'s suffix."""
    return final.parent / f"{TEMPORARY_PREFIX}{final.name}-{uuid.uuid4().hex}"


def _fsync_path(path: Path) -> None:
    """Flush one file or directory entry to disk (directories: their list of names)."""
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if path.is_dir() else os.O_RDONLY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _publish_tree(root: Path) -> None:
    """Give every file under ``root`` the mode the umask asks for, then flush it all to disk.

    safetensors (and so ``save_pretrained``) create weight files with mode 0600; checkpoints in a
    group-shared folder must be readable like every other file written there.
    """
    file_mode = 0o666 & ~_umask()
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            os.chmod(path, file_mode)
            _fsync_path(path)
        _fsync_path(Path(directory))


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that is renamed to ``final`` when the block exits normally.

    On normal exit every file inside gets the umask's mode and is fsynced, and the directory is
    renamed into place with one ``os.rename``, so a directory named ``final`` is always complete.
    If the block raises, the temporary directory is removed and the exception propagates.

    Raises:
        PhasescopeError: if ``final`` already exists (checked before and after the block): these
            directories (checkpoints) are immutable.
    """
    final = Path(final)
    if final.exists():
        raise PhasescopeError(f"{final} already exists; checkpoints are immutable, expected a new step")
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(final)
    temporary.mkdir()
    try:
        yield temporary
        _publish_tree(temporary)
        # os.rename silently replaces an *empty* directory on POSIX, so check again right before.
        if final.exists():
            raise PhasescopeError(f"{final} was created by another writer; expected it not to exist")
        os.rename(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _fsync_path(final.parent)


def atomic_write_bytes(path: Path, data: bytes, overwrite: bool = True) -> bool:
    """Write ``data`` to ``path`` so that ``path`` holds either the old or the complete new content.

    Args:
        path: the final file; its parent directory must exist.
        data: the complete content.
        overwrite: replace an existing file (``os.replace``); if False, publish with ``os.link``,
            which fails instead of replacing, so two racing writers cannot clobber each other.

    Returns:
        True if ``path`` now holds ``data``; False if ``overwrite`` is False and ``path`` existed
        (nothing is written then).
    """
    path = Path(path)
    if not overwrite and path.exists():
        return False
    temporary = _temporary_sibling(path)
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _fsync_path(path.parent)
    return True


def atomic_write_text(path: Path, text: str, overwrite: bool = True, encoding: str = "utf-8") -> bool:
    """Text version of :func:`atomic_write_bytes` (same arguments and return value)."""
    return atomic_write_bytes(path, text.encode(encoding), overwrite=overwrite)


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete every ``.tmp-*`` file or directory under ``directory`` (recursively).

    These are the leftovers of writers that were killed before publishing. Call it only when no
    writer is active on ``directory``: a live writer's temporary looks the same.

    Returns:
        The removed paths, sorted.
    """
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for parent, subdirectories, files in os.walk(directory):
        for name in list(subdirectories):
            if name.startswith(TEMPORARY_PREFIX):
                shutil.rmtree(Path(parent) / name, ignore_errors=True)
                removed.append(Path(parent) / name)
                subdirectories.remove(name)  # do not descend into what was just deleted
        for name in files:
            if name.startswith(TEMPORARY_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(Path(parent) / name)
                removed.append(Path(parent) / name)
    return sorted(removed)

