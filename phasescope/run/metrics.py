"""The metric store: tidy rows in immutable Parquet shards, one per (step, measure, config hash).

A shard lives at ``metrics/<measure>/step_XXXXXXXX-<config hash>.parquet`` and is published
atomically without overwriting, so a rerun skips work already done and two workers racing on the
same shard cannot corrupt it. Every shard has the same :data:`METRIC_SCHEMA`; pandas or DuckDB
read them all at once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from phasescope.errors import PhasescopeError
from phasescope.run.atomic import TEMPORARY_PREFIX, atomic_write_bytes
from phasescope.run.config import config_hash as compute_config_hash
from phasescope.run.layout import RunDir, step_dir_name

METRIC_SCHEMA = pa.schema(
    [
        pa.field("run", pa.string(), nullable=False),
        pa.field("step", pa.int64(), nullable=False),
        pa.field("tokens", pa.int64()),
        pa.field("measure", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),  # NaN is allowed, null is not
        # Optional dimensions: null where a measure does not use them.
        pa.field("src", pa.string()),  # source language
        pa.field("tgt", pa.string()),  # target language
        pa.field("layer", pa.int64()),
        pa.field("component", pa.string()),  # parameter group or module name
        pa.field("subset", pa.string()),  # data subset, e.g. "train" / "test" / "overlap"
        pa.field("lr", pa.float64()),
        pa.field("seed", pa.int64()),
        pa.field("data", pa.string()),  # a part of the training data, e.g. "language=de", "kind=glossary"
        pa.field("path", pa.string()),  # the path an attribution followed: "replay" or "chord"
        pa.field("note", pa.string()),  # not a dimension: why, e.g. the reason an attribution took the chord
        pa.field("config_hash", pa.string(), nullable=False),  # hash of the measure's config
    ]
)
DIMENSION_COLUMNS = ("src", "tgt", "layer", "component", "subset", "lr", "seed", "data", "path")
FILLED_COLUMNS = ("run", "measure", "config_hash")  # set by the store, not the rows
# Set by the store where a row leaves them out: a training log may carry the steps since the
# previous checkpoint in one shard keyed by the checkpoint's step.
DEFAULTED_COLUMNS = ("step", "tokens")
MEASURE_NAME_PATTERN = re.compile(r"^[a-z0-9_]+$")
_CONFIG_HASH_PATTERN = re.compile(r"^[0-9a-zA-Z]+$")
_DUCKDB_TYPES = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.float64(): "DOUBLE"}
SUMMARY_COLUMNS = ["measure", "metric", "subset", "n_rows", "n_steps", "first_step", "last_step", "last_value",
                   "last_value_of"]


class MetricStore:
    """Reads and writes the metric shards of one run."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.directory = run.metrics_dir

    def shard_path(self, step: int, measure: str, config_hash: str) -> Path:
        """Where the shard of (``step``, ``measure``, ``config_hash``) lives."""
        _check_measure_name(measure)
        if not isinstance(config_hash, str) or not _CONFIG_HASH_PATTERN.match(config_hash):
            raise PhasescopeError(
                f"config hash must be alphanumeric (see config_hash()), got {config_hash!r}"
            )
        return self.directory / measure / f"{step_dir_name(step)}-{config_hash}.parquet"

    def has_shard(self, step: int, measure: str, config_hash: str) -> bool:
        """Whether that shard exists (then a rerun skips it)."""
        return self.shard_path(step, measure, config_hash).is_file()

    def write_shard(
        self,
        step: int,
        measure: str,
        measure_config: dict | BaseModel,
        rows: list[dict[str, Any]] | pd.DataFrame,
        tokens: int | None = None,
    ) -> Path | None:
        """Publish one shard of tidy rows; skip it if it exists.

        Args:
            step: the checkpoint's step.
            measure: the measure's name (lowercase letters, digits, underscores).
            measure_config: the measure's config; its hash names the shard.
            rows: dicts (or a DataFrame) with ``metric``, ``value`` and optional dimensions
                (``src``, ``tgt``, ``layer``, ``component``, ``subset``, ``lr``, ``seed``);
                ``run``, ``measure`` and ``config_hash`` are filled in; ``step`` and ``tokens``
                too where a row does not give its own (a training log of the steps since the
                previous checkpoint does).
                An empty list writes an empty shard, which still marks the work as done.
            tokens: training tokens at this checkpoint, if known.

        Returns:
            The shard's path, or None if it already existed (nothing is written then).
        """
        if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int)):
            raise PhasescopeError(f"tokens must be an integer or None, got {tokens!r}")
        digest = compute_config_hash(measure_config)
        path = self.shard_path(step, measure, digest)
        if path.exists():
            return None
        filled = {
            "run": self.run.name,
            "step": step,
            "tokens": tokens,
            "measure": measure,
            "config_hash": digest,
        }
        try:
            table = rows_to_table(rows, filled)
        except PhasescopeError as error:
            raise PhasescopeError(f"measure {measure!r} at step {step}: {error}") from None
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not atomic_write_bytes(path, sink.getvalue().to_pybytes(), overwrite=False):
            return None  # another worker published the same shard first
        return path

    def shard_paths(self, measure: str | None = None) -> list[Path]:
        """All published shards (of one measure, or all), sorted; temporaries are skipped."""
        if measure is not None:
            _check_measure_name(measure)
        root = self.directory if measure is None else self.directory / measure
        if not root.is_dir():
            return []
        return sorted(
            path
            for path in root.rglob("*.parquet")
            if not any(part.startswith(TEMPORARY_PREFIX) for part in path.relative_to(root).parts)
        )

    def read(self, measure: str | None = None) -> pd.DataFrame:
        """All rows (of one measure, or all) as a DataFrame with the :data:`METRIC_SCHEMA` columns."""
        tables = [_read_shard(path) for path in self.shard_paths(measure)]
        if not tables:
            return METRIC_SCHEMA.empty_table().to_pandas()
        return pa.concat_tables(tables).to_pandas()

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with a view ``metrics`` over every shard of the run.

        The view globs ``metrics/**/*.parquet``, so shards written later show up in later
        queries. If the store is empty when connecting, the view is an empty table with the
        schema's columns (and stays empty: reconnect to see new shards).
        """
        connection = duckdb.connect()
        if self.shard_paths():
            pattern = str(self.directory.resolve() / "**" / "*.parquet").replace("'", "''")
            connection.execute(
                f"CREATE VIEW metrics AS SELECT * FROM read_parquet('{pattern}', union_by_name = true)"
            )
        else:
            columns = ", ".join(
                f"CAST(NULL AS {_DUCKDB_TYPES[field.type]}) AS {field.name}" for field in METRIC_SCHEMA
            )
            connection.execute(f"CREATE VIEW metrics AS SELECT {columns} WHERE false")
        return connection

    def summary(self) -> pd.DataFrame:
        """Per (measure, metric, subset): rows, distinct steps, first and last step, and the last value.

        Subsets (``overlap`` and ``no_overlap`` translation pairs, say) are kept apart: their mean is
        no quantity anyone defined. ``last_value`` is the value at the last step of the row without
        other dimensions where there is one (the total l1 norm beside per-layer ones), else the mean
        over the other dimensions (languages, layers, ...), NaN values skipped; ``last_value_of``
        says which.
        """
        frame = self.read()
        if frame.empty:
            return pd.DataFrame({name: [] for name in SUMMARY_COLUMNS})
        frame = frame.assign(subset=frame["subset"].fillna("-"))
        keys = ["measure", "metric", "subset"]
        grouped = frame.groupby(keys, sort=True)
        counts = grouped.agg(
            n_rows=("value", "size"),
            n_steps=("step", "nunique"),
            first_step=("step", "min"),
            last_step=("step", "max"),
        )
        at_last_step = frame[frame["step"] == grouped["step"].transform("max")].copy()
        others = [column for column in DIMENSION_COLUMNS if column != "subset"]
        at_last_step["overall"] = at_last_step[others].isna().all(axis=1)
        has_overall = at_last_step.groupby(keys)["overall"].transform("any")
        chosen = at_last_step[at_last_step["overall"] | ~has_overall]
        last = chosen.groupby(keys, sort=True).agg(last_value=("value", "mean"), n_last=("value", "size"),
                                                   overall=("overall", "any"))
        described = [_mean_over(chosen, key, others) if not row.overall else "the row without dimensions"
                     for key, row in last.iterrows()]
        last = last.assign(last_value_of=described)
        return counts.join(last[["last_value", "last_value_of"]]).reset_index()[SUMMARY_COLUMNS]


def _mean_over(rows: pd.DataFrame, key: tuple, dimensions: list[str]) -> str:
    """'mean of 72 rows over src, tgt': what a summary's last value averages."""
    measure, metric, subset = key
    group = rows[(rows.measure == measure) & (rows.metric == metric) & (rows.subset == subset)]
    varying = [column for column in dimensions if group[column].notna().any()]
    return f"mean of {len(group)} rows over {', '.join(varying)}" if len(group) > 1 else "one row"


def rows_to_table(rows: list[dict[str, Any]] | pd.DataFrame, filled: dict[str, Any]) -> pa.Table:
    """Tidy rows plus the store-filled columns as a table with exactly :data:`METRIC_SCHEMA`."""
    if isinstance(rows, pd.DataFrame):
        n_rows = len(rows)
        columns: dict[str, Any] = {str(name): rows[name] for name in rows.columns}
    elif isinstance(rows, list) and all(isinstance(row, dict) for row in rows):
        n_rows = len(rows)
        names = dict.fromkeys(name for row in rows for name in row)  # first-seen order
        columns = {str(name): [row.get(name) for row in rows] for name in names}
    else:
        raise PhasescopeError(
            f"rows: expected a list of dicts or a pandas DataFrame, got {type(rows).__name__}"
        )
    allowed = METRIC_SCHEMA.names
    unknown = sorted(set(columns) - set(allowed))
    if unknown:
        raise PhasescopeError(f"rows: unknown columns {unknown}; allowed columns are {allowed}")
    for name in ("metric", "value"):
        if n_rows and name not in columns:
            raise PhasescopeError(f"rows: missing required column {name!r}")
    arrays = []
    for field in METRIC_SCHEMA:
        if field.name in FILLED_COLUMNS:
            _check_filled(field.name, columns.get(field.name), filled[field.name])
            arrays.append(pa.array([filled[field.name]] * n_rows, type=field.type))
        elif field.name in DEFAULTED_COLUMNS:
            given = columns.get(field.name, [None] * n_rows)
            arrays.append(_to_arrow(field, [filled[field.name] if value is None or pd.isna(value) else value
                                            for value in given]))
        elif field.name in columns:
            arrays.append(_to_arrow(field, columns[field.name]))
        else:
            arrays.append(pa.nulls(n_rows, type=field.type))
    return pa.Table.from_arrays(arrays, schema=METRIC_SCHEMA)


def _to_arrow(field: pa.Field, values: Any) -> pa.Array:
    """One column converted to the field's type, strictly: no parsing of "0.5", no 3.5 -> layer 3."""
    problem = f"rows: column {field.name!r}: expected {field.type} values"
    try:
        # NaN means "missing" in a pandas dimension column, but it is a legitimate metric value.
        inferred = pa.array(values, from_pandas=field.name != "value")
        if not _same_kind(field.type, inferred.type):
            raise PhasescopeError(f"{problem}, got {inferred.type}")
        array = inferred.cast(field.type, safe=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise PhasescopeError(f"{problem} ({' '.join(str(error).split())})") from None
    if not field.nullable and array.null_count:
        raise PhasescopeError(
            f"rows: column {field.name!r}: expected a value in every row, got {array.null_count} missing"
        )
    return array


def _same_kind(target: pa.DataType, inferred: pa.DataType) -> bool:
    """Whether values inferred as ``inferred`` may be cast to ``target`` (numbers to numbers, ...)."""
    if pa.types.is_null(inferred):
        return True
    if pa.types.is_string(target):
        return pa.types.is_string(inferred) or pa.types.is_large_string(inferred)
    return pa.types.is_integer(inferred) or pa.types.is_floating(inferred)


def _check_filled(name: str, values: Any, expected: Any) -> None:
    """Rows may repeat a store-filled column only with the value the store fills in."""
    if values is None:
        return
    given = {value for value in list(values) if value is not None and not pd.isna(value)}
    if given - {expected}:
        raise PhasescopeError(
            f"rows: column {name!r} is filled in by the store with {expected!r}; "
            f"rows gave {sorted(given, key=str)}"
        )


def _read_shard(path: Path) -> pa.Table:
    """One shard conformed to :data:`METRIC_SCHEMA` (columns it lacks become nulls)."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        detail = " ".join(str(error).split())
        raise PhasescopeError(f"{path}: corrupt metric shard, expected Parquet ({detail})") from None
    arrays = []
    for field in METRIC_SCHEMA:
        if field.name in table.column_names:
            arrays.append(table.column(field.name).cast(field.type))
        else:
            arrays.append(pa.chunked_array([pa.nulls(table.num_rows, type=field.type)]))
    return pa.Table.from_arrays(arrays, schema=METRIC_SCHEMA)


def _check_measure_name(measure: str) -> None:
    if not isinstance(measure, str) or not MEASURE_NAME_PATTERN.match(measure):
        raise PhasescopeError(
            f"measure name must match {MEASURE_NAME_PATTERN.pattern} (lowercase, digits, _), got {measure!r}"
        )
