"""The on-disk contract: checkpoints, crash safety, metric shards, DuckDB view and config errors."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from phasescope.errors import PhasescopeError
from phasescope.run import (
    METRIC_SCHEMA,
    MetricStore,
    RunDir,
    StrictModel,
    atomic_directory,
    atomic_write_bytes,
    config_hash,
    dump_config,
    load_checkpoint,
    load_config,
    remove_stale_temporaries,
    save_checkpoint,
    validate_config,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


class ModelSection(StrictModel):
    width: int = 8
    activation: Literal["relu", "tanh"] = "relu"


class TrainSection(StrictModel):
    lr: float
    steps: int = 10


class ExperimentConfig(StrictModel):
    model: ModelSection
    train: TrainSection


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    config = ExperimentConfig(model=ModelSection(), train=TrainSection(lr=0.1))
    return RunDir.create(tmp_path / "run_a", dump_config(config))


# --- checkpoints -------------------------------------------------------------------------------


def test_checkpoint_round_trip(run: RunDir) -> None:
    weight = torch.randn(4, 6)
    model_state = {"embed.weight": weight, "unembed.weight": weight, "bias": torch.arange(6.0)[::2]}
    train_state = {"exp_avg": torch.randn(4, 6, dtype=torch.float64), "count": torch.tensor([7])}
    meta = {"rng_seed": 3, "data_position": [1, 2]}
    info = save_checkpoint(
        run, 20, model_state, {"width": 6}, tokens=5120, train_state=train_state, train_meta=meta,
        extra_files={"tokenizer.json": b'{"v": 1}'},
    )
    assert info.path == run.path / "checkpoints" / "step_00000020"
    save_checkpoint(run, 3, {"w": torch.zeros(2)}, {"width": 2})

    loaded = load_checkpoint(info.path)
    assert (loaded.step, loaded.tokens) == (20, 5120)
    assert loaded.model_config == {"width": 6}
    assert loaded.train_meta == meta
    assert loaded.model_state.keys() == model_state.keys()
    for name, tensor in model_state.items():
        torch.testing.assert_close(loaded.model_state[name], tensor, rtol=0, atol=0)
    for name, tensor in train_state.items():
        torch.testing.assert_close(loaded.train_state[name], tensor, rtol=0, atol=0)
    assert (info.path / "tokenizer.json").read_bytes() == b'{"v": 1}'

    assert [(c.step, c.tokens) for c in run.list_checkpoints()] == [(3, None), (20, 5120)]
    assert run.latest_checkpoint().step == 20
    without_state = load_checkpoint(run.checkpoint_dir(3))
    assert without_state.train_state is None and without_state.train_meta == {}
    with pytest.raises(PhasescopeError, match="immutable"):
        save_checkpoint(run, 20, model_state, {"width": 6})


def test_load_checkpoint_errors_name_the_file(run: RunDir) -> None:
    path = save_checkpoint(run, 1, {"w": torch.ones(3)}, {"width": 3}).path
    (path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(PhasescopeError, match=r"model\.safetensors: corrupt"):
        load_checkpoint(path)
    (path / "config.json").unlink()
    with pytest.raises(PhasescopeError, match=r"config\.json: missing"):
        load_checkpoint(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(PhasescopeError, match=r"config\.json: corrupt"):
        load_checkpoint(path)
    with pytest.raises(PhasescopeError, match="does not exist"):
        load_checkpoint(run.checkpoint_dir(99))


def test_atomic_directory_removes_temporary_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "step_00000001") as directory:
        (directory / "half.bin").write_bytes(b"x")
        raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []
    assert atomic_write_bytes(tmp_path / "a.bin", b"1", overwrite=False)
    assert not atomic_write_bytes(tmp_path / "a.bin", b"2", overwrite=False)
    assert atomic_write_bytes(tmp_path / "a.bin", b"3")
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"] and (tmp_path / "a.bin").read_bytes() == b"3"


# --- crash safety: SIGKILL a writer mid-write, several times ----------------------------------

# One process pays the torch import once, then forks a fresh writer per request and reports how
# it died; the test SIGKILLs each writer after a random delay while it writes in a loop.
_WRITER_SERVER = r"""
import os, sys
import pandas as pd
import torch
from phasescope.run import MetricStore, RunDir, save_checkpoint

torch.set_num_threads(1)  # an OpenMP pool started before fork() deadlocks the forked writers
BASE = torch.arange(1 << 20, dtype=torch.float32)  # 4 MiB per tensor
TOKENIZER = bytes(range(256)) * (1 << 14)  # 4 MiB more, written inside the temporary directory

def write_checkpoints(run):
    latest = run.latest_checkpoint()
    step = 0 if latest is None else latest.step + 1
    while True:
        save_checkpoint(run, step, {"weight": BASE + step, "head": BASE[:1000] * 2}, {"width": step},
                        tokens=step * 100, train_state={"momentum": BASE - step}, train_meta={"k": step},
                        extra_files={"tokenizer.json": TOKENIZER})
        step += 1

def write_shards(run):
    store = MetricStore(run)
    step = len(store.shard_paths())
    rows = pd.DataFrame({"metric": "loss", "value": range(20000), "layer": 3})
    while True:
        store.write_shard(step, "loss", {"n": 1}, rows.assign(value=rows["value"] + step), tokens=step)
        step += 1

for line in sys.stdin:
    kind, path = line.split()
    pid = os.fork()
    if pid == 0:
        (write_checkpoints if kind == "checkpoints" else write_shards)(RunDir.open(path))
        os._exit(0)
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
"""


@pytest.fixture(scope="module")
def writer_server():
    python_path = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    server = subprocess.Popen(
        [sys.executable, "-c", _WRITER_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": python_path},
    )
    yield server
    server.stdin.close()
    server.wait(timeout=30)


def _temporaries(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.name.startswith(".tmp-")}


def _kill_writers(server: subprocess.Popen, kind: str, run: RunDir, kills: int) -> set[Path]:
    """SIGKILL ``kills`` successive writers at random delays; return the temporaries they left."""
    delays = random.Random(0).sample([0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5], kills)
    for delay in delays:
        server.stdin.write(f"{kind} {run.path}\n")
        server.stdin.flush()
        pid = int(server.stdout.readline())
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        status = int(server.stdout.readline())
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"writer exited: {status}"
    return _temporaries(run.path)


def test_killed_checkpoint_writer_never_leaves_incomplete_step_dir(run: RunDir, writer_server) -> None:
    left_temporaries = _kill_writers(writer_server, "checkpoints", run, kills=5)
    kills = 5
    while not left_temporaries and kills < 20:  # until a kill has landed mid-write (most do)
        left_temporaries = _kill_writers(writer_server, "checkpoints", run, kills=1)
        kills += 1
    checkpoints = run.list_checkpoints()
    assert len(checkpoints) >= 3
    assert [c.step for c in checkpoints] == list(range(len(checkpoints)))  # resumed where it stopped
    base = torch.arange(1 << 20, dtype=torch.float32)
    for info in checkpoints:
        loaded = load_checkpoint(info.path)
        assert (loaded.step, loaded.tokens) == (info.step, info.step * 100)
        assert loaded.train_meta == {"k": info.step}
        torch.testing.assert_close(loaded.model_state["weight"], base + info.step, rtol=0, atol=0)
        torch.testing.assert_close(loaded.train_state["momentum"], base - info.step, rtol=0, atol=0)
        assert (info.path / "tokenizer.json").read_bytes() == bytes(range(256)) * (1 << 14)
    assert 1 <= len(left_temporaries) <= kills  # kills landed mid-write, at most one temporary each
    assert all(p.parent == run.checkpoints_dir and p.is_dir() for p in left_temporaries)
    assert set(remove_stale_temporaries(run.path)) == left_temporaries
    assert _temporaries(run.path) == set()
    assert [c.step for c in run.list_checkpoints()] == [c.step for c in checkpoints]


def test_killed_shard_writer_never_leaves_partial_shard(run: RunDir, writer_server) -> None:
    left_temporaries = _kill_writers(writer_server, "shards", run, kills=5)
    store = MetricStore(run)
    shards = store.shard_paths()
    assert len(shards) >= 3
    for path in shards:
        table = pq.read_table(path)
        step = int(path.name[len("step_") : len("step_") + 8])
        assert table.schema.equals(METRIC_SCHEMA)
        assert table.column("value").to_pylist() == [float(i + step) for i in range(20000)]
    assert set(remove_stale_temporaries(run.path)) == left_temporaries
    assert _temporaries(run.path) == set()
    assert len(store.read()) == 20000 * len(shards)


# --- metric store ------------------------------------------------------------------------------


def _rows(scale: float) -> list[dict]:
    return [
        {"metric": "wlt_prob", "value": scale * 0.25, "src": "en", "tgt": "de", "layer": 2},
        {"metric": "wlt_prob", "value": scale * 0.75, "src": "en", "tgt": "fr", "layer": 2},
        {"metric": "loss", "value": scale, "subset": "train"},
    ]


def test_rerun_skips_existing_shard_and_config_hash_is_stable(run: RunDir) -> None:
    store = MetricStore(run)
    measure_config = {"n_shots": 5, "languages": ["en", "de"]}
    path = store.write_shard(10, "translation", measure_config, _rows(1.0), tokens=640)
    digest = config_hash(measure_config)
    assert path == run.metrics_dir / "translation" / f"step_00000010-{digest}.parquet"
    assert store.has_shard(10, "translation", digest)
    before = path.read_bytes()
    assert store.write_shard(10, "translation", dict(reversed(measure_config.items())), _rows(9.0)) is None
    assert path.read_bytes() == before

    assert digest == config_hash({"languages": ["en", "de"], "n_shots": 5}) and len(digest) == 12
    assert digest != config_hash({"n_shots": 4, "languages": ["en", "de"]})
    in_other_process = subprocess.run(
        [sys.executable, "-c", "import sys, json, hashlib; d = json.dumps(json.loads(sys.argv[1]), "
         "sort_keys=True, separators=(',', ':')); print(hashlib.sha256(d.encode()).hexdigest()[:12])",
         json.dumps(measure_config)], capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert in_other_process == digest
    model_config = ModelSection(width=4)
    assert config_hash(model_config) == config_hash({"width": 4, "activation": "relu"})

    frame = store.read("translation")
    assert frame["value"].tolist() == [0.25, 0.75, 1.0]
    assert set(frame["run"]) == {"run_a"} and set(frame["tokens"]) == {640}
    assert set(frame["config_hash"]) == {digest}
    assert frame["src"].tolist()[:2] == ["en", "en"] and pd.isna(frame["src"].iloc[2])


def _records(frame: pd.DataFrame, order: list[str]) -> list[dict]:
    """Rows as plain dicts in a fixed order, missing values as None, whatever the library's dtypes."""
    frame = frame[METRIC_SCHEMA.names].sort_values(order).reset_index(drop=True).astype(object)
    return frame.where(frame.notna(), None).to_dict("records")


def test_duckdb_view_matches_pandas_and_summary(run: RunDir) -> None:
    store = MetricStore(run)
    assert store.connect().execute("SELECT count(*) FROM metrics").fetchone() == (0,)
    assert list(store.connect().execute("SELECT * FROM metrics").df().columns) == METRIC_SCHEMA.names
    assert store.summary().empty and list(store.read().columns) == METRIC_SCHEMA.names

    for step, scale in [(0, 1.0), (100, 2.0), (200, 4.0)]:
        store.write_shard(step, "translation", {"n_shots": 5}, _rows(scale), tokens=step * 64)
    store.write_shard(200, "norms", {"p": 1}, pd.DataFrame({"metric": ["l1"], "value": [3.5], "lr": [0.1]}))
    (run.metrics_dir / "norms" / ".tmp-step_00000300-abc.parquet-0123").write_bytes(b"partial")

    order = ["measure", "metric", "step", "src", "tgt", "subset"]
    from_pandas = _records(store.read(), order)
    from_duckdb = _records(store.connect().execute("SELECT * FROM metrics").df(), order)
    assert len(from_pandas) == 10 and from_duckdb == from_pandas
    mean_at_last = store.connect().execute(
        "SELECT avg(value) FROM metrics WHERE metric = 'wlt_prob' AND step = 200"
    ).fetchone()[0]
    assert mean_at_last == pytest.approx(2.0)

    summary = store.summary().set_index(["measure", "metric"])
    assert summary.loc[("translation", "wlt_prob")].to_dict() == {
        "subset": "-", "n_rows": 6, "n_steps": 3, "first_step": 0, "last_step": 200, "last_value": 2.0,
        "last_value_of": "mean of 2 rows over src, tgt, layer"
    }
    assert summary.loc[("translation", "loss"), "last_value"] == 4.0
    assert summary.loc[("translation", "loss"), "subset"] == "train"
    assert summary.loc[("norms", "l1")].to_dict() == {
        "subset": "-", "n_rows": 1, "n_steps": 1, "first_step": 200, "last_step": 200, "last_value": 3.5,
        "last_value_of": "one row"
    }


def test_summary_prefers_the_row_without_dimensions(run: RunDir) -> None:
    store = MetricStore(run)
    rows = [{"metric": "l1", "value": 10.0}, {"metric": "l1", "value": 4.0, "component": "layers.0"},
            {"metric": "l1", "value": 6.0, "component": "layers.2"}]
    store.write_shard(5, "train", {}, rows)
    assert store.summary().set_index(["measure", "metric"]).loc[("train", "l1"), "last_value"] == 10.0


def test_summary_keeps_subsets_apart(run: RunDir) -> None:
    store = MetricStore(run)
    rows = [{"metric": "top1", "value": 0.8, "subset": "no_overlap"},
            {"metric": "top1", "value": 0.2, "subset": "overlap"},
            {"metric": "top1", "value": 0.6, "subset": "overlap", "src": "en", "tgt": "de"},
            {"metric": "top1", "value": 0.4, "subset": "heldout", "src": "en", "tgt": "de"},
            {"metric": "top1", "value": 0.0, "subset": "heldout", "src": "de", "tgt": "en"}]
    store.write_shard(5, "wlt", {}, rows)
    summary = store.summary().set_index("subset")
    assert summary.last_value.to_dict() == {"heldout": 0.2, "no_overlap": 0.8, "overlap": 0.2}
    assert summary.loc["heldout", "last_value_of"] == "mean of 2 rows over src, tgt"
    assert summary.loc["overlap", "last_value_of"] == "the row without dimensions"


def test_shard_rows_are_validated(run: RunDir) -> None:
    store = MetricStore(run)
    with pytest.raises(PhasescopeError, match=r"unknown columns \['langauge'\]; allowed columns are .*'src'"):
        store.write_shard(0, "translation", {}, [{"metric": "p", "value": 1.0, "langauge": "en"}])
    with pytest.raises(PhasescopeError, match=r"column 'layer': expected int64"):
        store.write_shard(0, "translation", {}, [{"metric": "p", "value": 1.0, "layer": 2.5}])
    with pytest.raises(PhasescopeError, match=r"missing required column 'value'"):
        store.write_shard(0, "translation", {}, [{"metric": "p"}])
    with pytest.raises(PhasescopeError, match=r"measure name must match"):
        store.write_shard(0, "Translation-v2", {}, [{"metric": "p", "value": 1.0}])
    with pytest.raises(PhasescopeError, match=r"column 'run' is filled in by the store"):
        store.write_shard(0, "translation", {}, [{"metric": "p", "value": 1.0, "run": "other"}])
    assert store.shard_paths() == []


def test_rows_may_carry_their_own_steps(run: RunDir) -> None:
    store = MetricStore(run)
    log = [{"metric": "train_loss", "value": 3.0 - s, "step": s} for s in (1, 2)] + [{"metric": "l1", "value": 7.0}]
    store.write_shard(2, "train", {}, log, tokens=128)
    frame = store.read("train").sort_values(["metric", "step"])
    assert frame[["metric", "step", "value"]].values.tolist() == [["l1", 2, 7.0], ["train_loss", 1, 2.0],
                                                                  ["train_loss", 2, 1.0]]
    assert frame["tokens"].tolist() == [128, 128, 128]


# --- configs and run directories ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model: {widht: 4}\ntrain: {lr: 0.1}\n", "model.widht: unknown field (did you mean 'width'?)"),
        ("model: {activation: gelu}\ntrain: {lr: 1}\n", "model.activation: Input should be 'relu' or 'tanh'"),
        ("model: {}\ntrain: {steps: 3}\n", "train.lr: Field required"),
        ("model: {width: [1\ntrain: {lr: 0.1}\n", "invalid YAML"),
        ("- 1\n- 2\n", "expected a mapping of config fields at the top level, got list"),
    ],
)
def test_bad_config_is_one_line_naming_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(PhasescopeError) as error:
        load_config(path, ExperimentConfig)
    message = str(error.value)
    assert expected in message and message.startswith(f"{path}: ") and "\n" not in message


def test_config_errors_are_collected_and_missing_file_reported(tmp_path: Path) -> None:
    with pytest.raises(PhasescopeError) as error:
        bad = {"model": {"activation": "gelu", "width": "wide"}}
        validate_config(bad, ExperimentConfig, "run/config.yaml")
    assert str(error.value) == (
        "run/config.yaml: model.width: Input should be a valid integer, unable to parse string as an integer "
        "(got 'wide'); model.activation: Input should be 'relu' or 'tanh' (got 'gelu'); train: Field required"
    )
    with pytest.raises(PhasescopeError, match=r"missing\.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml", ExperimentConfig)

    config = ExperimentConfig(model=ModelSection(width=3), train=TrainSection(lr=0.5))
    path = tmp_path / "good.yaml"
    path.write_text(dump_config(config))
    assert load_config(path, ExperimentConfig) == config
    assert dump_config(config).splitlines()[:2] == ["model:", "  width: 3"]


def test_run_dir_create_and_open(tmp_path: Path) -> None:
    with pytest.raises(PhasescopeError, match="run directory .*nowhere does not exist"):
        RunDir.open(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(PhasescopeError, match=r"plain is not a phasescope run \(no config.yaml\)"):
        RunDir.open(tmp_path / "plain")

    text = dump_config(ExperimentConfig(model=ModelSection(), train=TrainSection(lr=0.1)))
    run = RunDir.create(tmp_path / "r", text)
    assert all(p.is_dir() for p in (run.checkpoints_dir, run.metrics_dir, run.report_dir))
    with pytest.raises(PhasescopeError, match="already exists"):
        RunDir.create(tmp_path / "r", text)
    assert RunDir.create(tmp_path / "r", text, exist_ok=True).config_path.read_text() == text
    with pytest.raises(PhasescopeError, match="exists with a different config.yaml"):
        RunDir.create(tmp_path / "r", text.replace("0.1", "0.2"), exist_ok=True)
    reopened = RunDir.open(tmp_path / "r")
    assert validate_config(reopened.read_config_dict(), ExperimentConfig).train.lr == 0.1
    assert reopened.latest_checkpoint() is None and reopened.list_checkpoints() == []
