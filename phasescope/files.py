"""Reading the user's text files: UTF-8, and a one-line error naming the file where one is not."""

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
