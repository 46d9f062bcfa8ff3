"""Checkpoint series: the checkpoints of a local run, or the revisions of a Hugging Face model repo.

A series is what measures run over, one checkpoint at a time, in step order. Two kinds:

- a local run directory (``<run>/checkpoints/step_XXXXXXXX/`` in Hugging Face format, with the
  tokenizer files): metric shards go into that run;
- a Hub repo whose revisions are checkpoints (Pythia ``step1000``; OLMo ``step1000-tokens4B`` or
  ``stage1-step1000-tokens5B``; or a list of revisions the user gives): listed with
  ``huggingface_hub`` (from the local cache when offline), loaded with
  ``from_pretrained(repo, revision=...)``; metric shards go into an output run directory whose
  ``config.yaml`` (``kind: series``) records the repo, so the series can be reopened from it.

Weights load as safetensors only (``use_safetensors=True``); ``trust_remote_code`` is off unless asked.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field
from safetensors import SafetensorError

from phasescope.errors import PhasescopeError
from phasescope.run.checkpoint import check_safetensors
from phasescope.run.config import StrictModel, dump_config, validate_config
from phasescope.run.layout import RunDir

PYTHIA_REVISION = re.compile(r"^step(\d+)$")
OLMO_REVISION = re.compile(r"^(?:stage\d+-)?step(\d+)-tokens(\d+(?:\.\d+)?)([KMBT]?)$")
_TOKEN_UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class SeriesConfig(StrictModel):
    """The ``config.yaml`` of a run directory that holds the metrics of a Hub repo's revisions."""

    kind: Literal["series"] = "series"
    repo: str  # Hub model repo id, e.g. EleutherAI/pythia-70m
    revisions: list[str] | None = None  # explicit revisions; default: every branch/tag named like a checkpoint
    tokens_per_step: int | None = Field(None, ge=1)  # for step-only names (Pythia: 2,097,152 = 1024 x 2048)
    cache_dir: str | None = None  # Hugging Face cache (default: the hub's own)
    trust_remote_code: bool = False  # run code shipped in the repo: only for repos you trust


@dataclass(frozen=True)
class SeriesCheckpoint:
    """One checkpoint of a series.

    Attributes:
        step: optimizer step.
        tokens: training tokens seen, when known.
        name: ``step_00001000`` for a local run, the revision name for a Hub repo.
        path: the local checkpoint directory (None for a Hub revision).
        revision: the Hub revision (None for a local checkpoint).
    """

    step: int
    tokens: int | None
    name: str
    path: Path | None = None
    revision: str | None = None


def parse_revision(revision: str, tokens_per_step: int | None = None) -> tuple[int, int | None] | None:
    """(step, tokens) of a checkpoint revision name, or None if it does not name one.

    ``step143000`` (Pythia) gives tokens = step x ``tokens_per_step`` when that is given;
    ``step1000-tokens4B`` and ``stage1-step1000-tokens5B`` (OLMo) carry their token count.
    """
    match = OLMO_REVISION.match(revision)
    if match:
        step, amount, unit = match.groups()
        return int(step), int(round(float(amount) * _TOKEN_UNITS[unit]))
    match = PYTHIA_REVISION.match(revision)
    if match:
        step = int(match.group(1))
        return step, step * tokens_per_step if tokens_per_step else None
    return None


class CheckpointSeries:
    """An ordered list of checkpoints with loaders for their model and tokenizer.

    Build one with :func:`open_series`. ``run`` is the run directory where metric shards go.
    """

    def __init__(self, run: RunDir, checkpoints: list[SeriesCheckpoint], source: str,
                 repo: str | None = None, cache_dir: str | None = None, trust_remote_code: bool = False,
                 offline: bool = False) -> None:
        if not checkpoints:
            raise PhasescopeError(f"the series {source} has no checkpoints")
        self.run = run
        self.checkpoints = sorted(checkpoints, key=lambda c: (c.step, c.tokens or 0, c.name))
        self.source = source
        self.repo = repo
        self.cache_dir = cache_dir
        self.trust_remote_code = trust_remote_code
        self.offline = offline
        self._reference_fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"CheckpointSeries({self.source!r}, {len(self.checkpoints)} checkpoints)"

    @functools.cached_property
    def kind(self) -> str:
        """``gd`` for a run of ``phasescope train`` of kind gd, else ``lm`` (LM runs, Hub series); read once."""
        return "gd" if self.run.read_config_dict().get("kind") == "gd" else "lm"

    def __len__(self) -> int:
        return len(self.checkpoints)

    @property
    def name(self) -> str:
        """The ``run`` column of this series' metrics."""
        return self.run.name

    # --- selection ---------------------------------------------------------------------------
    def select(self, selection: str | None = None) -> list[SeriesCheckpoint]:
        """Checkpoints named by a selection string, in step order.

        Comma-separated items: ``all``; ``first``; ``last``; a step (``1000``); an inclusive step
        range (``1000..5000``, either end may be omitted); ``every:N`` (every N-th checkpoint, plus
        the last). None or an empty string selects all.
        """
        if selection is None or not selection.strip():
            return list(self.checkpoints)
        by_step = {c.step: c for c in self.checkpoints}
        chosen: dict[int, SeriesCheckpoint] = {}
        for item in (part.strip() for part in selection.split(",")):
            if item == "all":
                chosen.update(by_step)
            elif item == "first":
                chosen[self.checkpoints[0].step] = self.checkpoints[0]
            elif item == "last":
                chosen[self.checkpoints[-1].step] = self.checkpoints[-1]
            elif item.startswith("every:"):
                every = _positive_int(item[len("every:"):], item)
                picked = self.checkpoints[::every] + [self.checkpoints[-1]]
                chosen.update({c.step: c for c in picked})
            elif ".." in item:
                low, high = item.split("..", 1)
                low_step = _non_negative_int(low, item) if low else None
                high_step = _non_negative_int(high, item) if high else None
                chosen.update({c.step: c for c in self.checkpoints
                               if (low_step is None or c.step >= low_step)
                               and (high_step is None or c.step <= high_step)})
            else:
                step = _non_negative_int(item, item)
                if step not in by_step:
                    available = ", ".join(str(s) for s in list(by_step)[:12]) + (", ..." if len(by_step) > 12 else "")
                    raise PhasescopeError(f"the series has no checkpoint at step {step}; available: {available}")
                chosen[step] = by_step[step]
        if not chosen:
            raise PhasescopeError(f"checkpoint selection {selection!r} matches no checkpoint of the series")
        return [chosen[step] for step in sorted(chosen)]

    # --- loading -----------------------------------------------------------------------------
    def _pretrained_args(self, checkpoint: SeriesCheckpoint) -> tuple[str, dict]:
        if checkpoint.path is not None:
            return str(checkpoint.path), {"trust_remote_code": self.trust_remote_code}
        return self.repo, {"revision": checkpoint.revision, "cache_dir": self.cache_dir,
                           "local_files_only": self.offline, "trust_remote_code": self.trust_remote_code}

    def load_model(self, checkpoint: SeriesCheckpoint, device: str = "cpu", dtype=None):
        """The checkpoint's causal LM (safetensors only), in eval mode on ``device``."""
        from transformers import AutoModelForCausalLM

        where, kwargs = self._pretrained_args(checkpoint)
        if checkpoint.path is not None:  # a truncated weight file is named, not a traceback from deep inside
            for weights in sorted(checkpoint.path.glob("*.safetensors")):
                check_safetensors(weights)
        with quiet_transformers():
            try:
                model = AutoModelForCausalLM.from_pretrained(where, use_safetensors=True, dtype=dtype, **kwargs)
            except (OSError, ValueError, KeyError, SafetensorError) as error:
                raise PhasescopeError(f"cannot load the model of checkpoint {checkpoint.name} from {where}: "
                                      f"{_first_line(error)}") from None
        return model.to(device).eval()

    def load_tokenizer(self, checkpoint: SeriesCheckpoint | None = None):
        """The tokenizer saved with ``checkpoint`` (default: the series' last checkpoint)."""
        from transformers import AutoTokenizer

        checkpoint = checkpoint or self.checkpoints[-1]
        where, kwargs = self._pretrained_args(checkpoint)
        with quiet_transformers():
            try:
                return AutoTokenizer.from_pretrained(where, **kwargs)
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise PhasescopeError(f"cannot load the tokenizer of checkpoint {checkpoint.name} from {where}: "
                                      f"{_first_line(error)}") from None

    def check_tokenizer(self, checkpoint: SeriesCheckpoint, tokenizer=None) -> None:
        """Raise if ``checkpoint``'s tokenizer differs from the series' (its last checkpoint's).

        Measures of a series share one tokenization of their prompts, which is only right if every
        checkpoint has the same vocabulary and special tokens.
        """
        if self._reference_fingerprint is None:
            self._reference_fingerprint = tokenizer_fingerprint(self.load_tokenizer())
        own = tokenizer_fingerprint(tokenizer if tokenizer is not None else self.load_tokenizer(checkpoint))
        if own != self._reference_fingerprint:
            raise PhasescopeError(f"checkpoint {checkpoint.name} has a different tokenizer from the series' "
                                  f"(last checkpoint {self.checkpoints[-1].name}); its measures are skipped")

    def weight_files(self, checkpoint: SeriesCheckpoint) -> list[Path]:
        """The checkpoint's safetensors files (downloaded into the cache for a Hub revision), for
        reading single tensors lazily with ``safetensors.safe_open``."""
        if checkpoint.path is not None:
            files = sorted(checkpoint.path.glob("*.safetensors"))
            files = [f for f in files if f.name != "state.safetensors"]  # optimizer state, not weights
        else:
            files = self._hub_weight_files(checkpoint)
        if not files:
            raise PhasescopeError(f"checkpoint {checkpoint.name} has no safetensors weights")
        return files

    def _hub_weight_files(self, checkpoint: SeriesCheckpoint) -> list[Path]:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        def fetch(filename: str) -> Path:
            return Path(hf_hub_download(self.repo, filename, revision=checkpoint.revision, cache_dir=self.cache_dir,
                                        local_files_only=self.offline))
        try:
            index = json.loads(fetch("model.safetensors.index.json").read_text(encoding="utf-8"))
            return [fetch(name) for name in sorted(set(index["weight_map"].values()))]
        except (EntryNotFoundError, LocalEntryNotFoundError):
            pass
        try:
            return [fetch("model.safetensors")]
        except (EntryNotFoundError, LocalEntryNotFoundError) as error:
            raise PhasescopeError(f"checkpoint {checkpoint.name} of {self.repo}: no safetensors weights "
                                  f"({_first_line(error)})") from None

    def optimizer_state(self, checkpoint: SeriesCheckpoint) -> tuple[Path | None, dict]:
        """The resume state saved beside a local checkpoint: (``state.safetensors`` or None, ``state.json``)."""
        if checkpoint.path is None:
            return None, {}
        tensors = checkpoint.path / "state.safetensors"
        meta_path = checkpoint.path / "state.json"
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        return (tensors if tensors.is_file() else None), meta


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the vocabulary and special tokens: equal fingerprints tokenize alike."""
    payload = json.dumps({"vocab": sorted(tokenizer.get_vocab().items()),
                          "special": sorted(map(str, tokenizer.all_special_tokens))}, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def open_series(source: str | Path, *, out: str | Path | None = None, revisions: list[str] | None = None,
                tokens_per_step: int | None = None, cache_dir: str | None = None,
                trust_remote_code: bool = False, offline: bool | None = None) -> CheckpointSeries:
    """A local run, a run directory made for a Hub repo earlier, or a Hub repo id.

    Args:
        source: a run directory, or a Hub repo id (``EleutherAI/pythia-70m``).
        out: for a Hub repo, the run directory for its metrics (default ``runs/<repo name>``).
        revisions: for a Hub repo, the revisions to use (default: every branch or tag named like
            a checkpoint, see :func:`parse_revision`).
        tokens_per_step: tokens per step for revisions that name only the step.
        cache_dir: the Hugging Face cache directory.
        trust_remote_code: allow code shipped in the repo to run (off by default).
        offline: list revisions from the local cache and never touch the network (default: the
            ``HF_HUB_OFFLINE`` setting).
    """
    path = Path(source)
    if path.is_dir():
        run = RunDir.open(path)
        raw = run.read_config_dict()
        if raw.get("kind") == "series":
            config = validate_config(raw, SeriesConfig, source=str(run.config_path))
            return _hub_series(config, run, offline)
        return _local_series(run)
    text = str(source)
    if not REPO_ID.match(text):
        raise PhasescopeError(f"series {text!r}: expected a run directory or a Hugging Face repo id "
                              "(owner/name); no such directory")
    config = SeriesConfig(repo=text, revisions=revisions, tokens_per_step=tokens_per_step, cache_dir=cache_dir,
                          trust_remote_code=trust_remote_code)
    out = Path(out) if out is not None else Path("runs") / text.split("/")[-1]
    run = RunDir.create(out, dump_config(config), exist_ok=True)
    return _hub_series(config, run, offline)


def _local_series(run: RunDir) -> CheckpointSeries:
    checkpoints = [SeriesCheckpoint(info.step, info.tokens, info.path.name, path=info.path)
                   for info in run.list_checkpoints()]
    if not checkpoints:
        raise PhasescopeError(f"run {run.path} has no checkpoints yet")
    missing = [c.name for c in checkpoints if not (c.path / "config.json").is_file()]
    if missing:
        raise PhasescopeError(f"run {run.path}: checkpoint {missing[0]} has no config.json "
                              "(expected Hugging Face format)")
    return CheckpointSeries(run, checkpoints, str(run.path))


def _hub_series(config: SeriesConfig, run: RunDir, offline: bool | None) -> CheckpointSeries:
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE if offline is None else offline
    names = config.revisions if config.revisions is not None else list_revisions(config.repo, config.cache_dir,
                                                                                   offline)
    checkpoints = []
    for name in names:
        parsed = parse_revision(name, config.tokens_per_step)
        if parsed is None:
            if config.revisions is not None:
                raise PhasescopeError(f"revision {name!r} of {config.repo} does not name a checkpoint; expected "
                                      "stepN (Pythia) or stepN-tokensXB (OLMo)")
            continue
        checkpoints.append(SeriesCheckpoint(parsed[0], parsed[1], name, revision=name))
    if not checkpoints:
        raise PhasescopeError(f"{config.repo} has no revisions named like checkpoints (stepN or stepN-tokensXB); "
                              f"found: {', '.join(names[:8]) or 'none'}")
    return CheckpointSeries(run, checkpoints, config.repo, repo=config.repo, cache_dir=config.cache_dir,
                            trust_remote_code=config.trust_remote_code, offline=offline)


def list_revisions(repo: str, cache_dir: str | None = None, offline: bool = False) -> list[str]:
    """Branch and tag names of a Hub model repo: from the Hub, or from the local cache when offline."""
    if not offline:
        from huggingface_hub import HfApi

        try:
            refs = HfApi().list_repo_refs(repo)
            return [ref.name for ref in [*refs.branches, *refs.tags]]
        except Exception as error:  # network errors come in many types; the cache is the fallback
            cached = _cached_revisions(repo, cache_dir)
            if cached:
                return cached
            raise PhasescopeError(f"cannot list the revisions of {repo}: {_first_line(error)}") from None
    cached = _cached_revisions(repo, cache_dir)
    if not cached:
        raise PhasescopeError(f"{repo} is not in the Hugging Face cache{f' {cache_dir}' if cache_dir else ''} "
                              "and the hub is offline (HF_HUB_OFFLINE=1)")
    return cached


def _cached_revisions(repo: str, cache_dir: str | None) -> list[str]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return []
    return sorted({ref for cached in info.repos if cached.repo_id == repo and cached.repo_type == "model"
                   for revision in cached.revisions for ref in revision.refs})


@contextlib.contextmanager
def quiet_transformers():
    """No "Loading weights" or "Writing model shards" bars, no warnings from transformers: phasescope
    shows its own progress (the executor's, training's)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(error).__name__


def _positive_int(text: str, item: str) -> int:
    value = _non_negative_int(text, item)
    if value < 1:
        raise PhasescopeError(f"checkpoint selection {item!r}: expected a positive integer")
    return value


def _non_negative_int(text: str, item: str) -> int:
    if not text.strip().isdigit():
        raise PhasescopeError(f"checkpoint selection {item!r}: expected all, first, last, a step, a range "
                              "START..END or every:N")
    return int(text)
