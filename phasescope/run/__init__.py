"""The on-disk contract: run directories, atomic checkpoints, typed configs and the metric store.

See DESIGN.md, section "Contracts". Everything that touches a run directory goes through here.
"""

from phasescope.run.atomic import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temporaries,
)
from phasescope.run.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
from phasescope.run.config import (
    StrictModel,
    config_hash,
    dump_config,
    load_config,
    merge_config,
    validate_config,
)
from phasescope.run.layout import STEP_DIR_PATTERN, CheckpointInfo, RunDir, step_dir_name
from phasescope.run.metrics import METRIC_SCHEMA, MetricStore

__all__ = [
    "METRIC_SCHEMA",
    "STEP_DIR_PATTERN",
    "CheckpointInfo",
    "LoadedCheckpoint",
    "MetricStore",
    "RunDir",
    "StrictModel",
    "atomic_directory",
    "atomic_write_bytes",
    "atomic_write_text",
    "config_hash",
    "dump_config",
    "load_config",
    "merge_config",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
    "step_dir_name",
    "validate_config",
]
