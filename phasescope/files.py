"""The user's files: text read as UTF-8 (a one-line error naming a file that is not), config paths that
exist, and output paths that can be written, each checked before any work."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from phasescope.errors import PhasescopeError


def read_text_file(path: Path | str) -> str:
    """The file's text (UTF-8); a file that is not UTF-8 is a one-line error naming it and the first bad byte."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise PhasescopeError(_not_utf8(path, error)) from None


def text_lines(path: Path | str) -> Iterator[str]:
    """The file's lines (UTF-8), read as they are used; a line that is not UTF-8 is a one-line error."""
    path = Path(path)
    with open(path, encoding="utf-8") as handle:
        try:
            yield from handle
        except UnicodeDecodeError as error:
            raise PhasescopeError(_not_utf8(path, error)) from None


def _not_utf8(path: Path, error: UnicodeDecodeError) -> str:
    return (f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start} of a read); "
            "convert it (iconv -f <encoding> -t UTF-8) or remove it")


def check_config_file(path: Path | str) -> Path:
    """The path of a config file that exists; a one-line error otherwise (checked before anything is imported
    or computed, so that a mistyped path answers at once)."""
    path = Path(path)
    if not path.is_file():
        raise PhasescopeError(f"{path}: config file not found (expected a YAML file)")
    return path


def check_output_path(path: Path | str, *, folder: bool) -> None:
    """Refuse, in one line and before any work, an output path that cannot be written: a file where one of
    its folders should be, or the path itself of the other kind (a folder where a file goes, or a file
    where a folder goes)."""
    path = Path(path)
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            raise PhasescopeError(f"{path}: {parent} is a file, not a folder")
    if path.exists() and path.is_dir() != folder:
        there, wanted = ("a file", "a folder") if folder else ("a folder", "a file")
        raise PhasescopeError(f"{path}: {there} is there, where the output goes as {wanted}")
