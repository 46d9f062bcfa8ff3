"""The run directory: where a run's config, checkpoints, metric shards and report live.

::

    <run>/
      config.yaml                 resolved config of the run
      checkpoints/step_00001000/  one complete checkpoint (see checkpoint.py)
      metrics/<measure>/          immutable Parquet shards (see metrics.py)
      report/                     figures and HTML
      superseded/after_step_N/    records of a trajectory a resumed run replaced (kept, not deleted)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from phasescope.errors import PhasescopeError
from phasescope.run.atomic import atomic_write_text

STEP_DIR_PATTERN = re.compile(r"^step_(\d{8})$")
_SHARD_STEP = re.compile(r"^step_(\d{8})-")
MAX_STEP = 10**8 - 1  # step directories carry exactly 8 digits so that names sort by step


def step_dir_name(step: int) -> str:
    """The checkpoint directory name of a step: ``step_00001000``."""
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
        raise PhasescopeError(f"checkpoint step must be an integer in [0, {MAX_STEP}], got {step!r}")
    return f"step_{step:08d}"


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete checkpoint on disk: its step, tokens seen so far (if recorded) and directory."""

    step: int
    tokens: int | None
    path: Path


class RunDir:
    """Paths of one run directory; build it with :meth:`create` or :meth:`open`."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.config_path = self.path / "config.yaml"
        self.checkpoints_dir = self.path / "checkpoints"
        self.metrics_dir = self.path / "metrics"
        self.report_dir = self.path / "report"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        """The run's name: its directory name (the ``run`` column of its metrics)."""
        return self.path.resolve().name

    @classmethod
    def create(cls, path: Path | str, config_yaml_text: str, exist_ok: bool = False) -> RunDir:
        """Make the run layout and write ``config.yaml`` atomically.

        Args:
            path: the run directory (created with its parents if missing).
            config_yaml_text: the resolved config, as YAML text (see ``dump_config``).
            exist_ok: accept an existing run whose ``config.yaml`` is identical (to resume it).

        Raises:
            PhasescopeError: the run exists and ``exist_ok`` is False, or it exists with a
                different config.
        """
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise PhasescopeError(f"run directory {run.path} is a file; expected a directory")
        if run.config_path.exists():
            run._check_same_config(config_yaml_text, exist_ok)
        for directory in (run.path, run.checkpoints_dir, run.metrics_dir, run.report_dir):
            directory.mkdir(parents=True, exist_ok=True)
        if not atomic_write_text(run.config_path, config_yaml_text, overwrite=False):
            run._check_same_config(config_yaml_text, exist_ok)  # another process created it first
        return run

    def _check_same_config(self, config_yaml_text: str, exist_ok: bool) -> None:
        if not exist_ok:
            raise PhasescopeError(
                f"run directory {self.path} already exists; expected a new directory (or resume it)"
            )
        if self.config_path.read_text(encoding="utf-8") != config_yaml_text:
            raise PhasescopeError(
                f"run directory {self.path} exists with a different config.yaml; "
                "expected the same config to resume, or choose a new run directory"
            )

    @classmethod
    def open(cls, path: Path | str) -> RunDir:
        """An existing run directory.

        Raises:
            PhasescopeError: the directory does not exist or has no ``config.yaml``.
        """
        run = cls(path)
        if not run.path.exists():
            raise PhasescopeError(f"run directory {run.path} does not exist")
        if not run.path.is_dir():
            raise PhasescopeError(f"run directory {run.path} is a file; expected a directory")
        if not run.config_path.is_file():
            raise PhasescopeError(f"{run.path} is not a phasescope run (no config.yaml)")
        return run

    def checkpoint_dir(self, step: int) -> Path:
        """Where the checkpoint of ``step`` lives (whether or not it exists yet)."""
        return self.checkpoints_dir / step_dir_name(step)

    def list_checkpoints(self) -> list[CheckpointInfo]:
        """Complete checkpoints sorted by step; temporaries of unfinished writes are skipped."""
        if not self.checkpoints_dir.is_dir():
            return []
        checkpoints = []
        for entry in self.checkpoints_dir.iterdir():
            match = STEP_DIR_PATTERN.match(entry.name)
            if match is None or not entry.is_dir():
                continue
            checkpoints.append(CheckpointInfo(int(match.group(1)), _read_tokens(entry), entry))
        return sorted(checkpoints, key=lambda info: info.step)

    def supersede_after(self, step: int) -> tuple[Path | None, int]:
        """Move the checkpoints and metric shards of steps after ``step`` into ``superseded/after_step_N/``
        (keeping their relative paths; each move a rename): a run resumed from ``step`` then writes its
        new trajectory without mixing two. Returns (the folder, records moved), or (None, 0) if none were."""
        later = [info.path for info in self.list_checkpoints() if info.step > step]
        if self.metrics_dir.is_dir():
            later += [path for path in sorted(self.metrics_dir.rglob("*.parquet"))
                      if (match := _SHARD_STEP.match(path.name)) and int(match.group(1)) > step]
        if not later:
            return None, 0
        base = self.path / "superseded" / f"after_{step_dir_name(step)}"
        folder, attempt = base, 1
        while folder.exists():  # a second resume from the same step keeps the first trajectory too
            attempt += 1
            folder = base.with_name(f"{base.name}-{attempt}")
        for path in later:
            target = folder / path.relative_to(self.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)
        return folder, len(later)

    def select_checkpoints(self, steps: list[int] | None = None) -> list[CheckpointInfo]:
        """The checkpoints of ``steps`` (all when None), in step order; a missing step is an error."""
        checkpoints = self.list_checkpoints()
        if not checkpoints:
            raise PhasescopeError(f"run {self.path} has no checkpoints yet")
        if steps is None:
            return checkpoints
        by_step = {info.step: info for info in checkpoints}
        missing = sorted(set(steps) - set(by_step))
        if missing:
            available = ", ".join(str(s) for s in list(by_step)[:10]) + (", ..." if len(by_step) > 10 else "")
            raise PhasescopeError(f"run {self.path} has no checkpoint at step {missing[0]}; available: {available}")
        return [by_step[s] for s in sorted(set(steps))]

    def latest_checkpoint(self) -> CheckpointInfo | None:
        """The checkpoint with the highest step, or None if the run has none yet."""
        checkpoints = self.list_checkpoints()
        return checkpoints[-1] if checkpoints else None

    def read_config_dict(self) -> dict[str, Any]:
        """The run's ``config.yaml`` as a dict (validate it with ``validate_config``)."""
        if not self.config_path.is_file():
            raise PhasescopeError(f"{self.path} is not a phasescope run (no config.yaml)")
        try:
            data = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            detail = " ".join(str(error).split())
            raise PhasescopeError(f"{self.config_path}: invalid YAML ({detail})") from None
        if not isinstance(data, dict):
            raise PhasescopeError(
                f"{self.config_path}: expected a mapping at the top level, got {type(data).__name__}"
            )
        return data


def _read_tokens(checkpoint: Path) -> int | None:
    """The ``tokens`` entry of a checkpoint's ``state.json``; None if absent."""
    state_path = checkpoint / "state.json"
    if not state_path.is_file():
        return None
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PhasescopeError(f"{state_path}: expected a JSON object, cannot parse it ({error})") from None
    tokens = state.get("tokens") if isinstance(state, dict) else None
    return int(tokens) if tokens is not None else None
