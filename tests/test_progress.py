"""Progress of long work in a log file (stderr not a terminal): plain lines at a steady interval."""

from __future__ import annotations

import os
import subprocess
import sys

from phasescope.progress import PlainProgress, console, format_tokens


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_writes_a_line_every_interval_with_time_left(capsys):
    clock = FakeClock()
    progress = PlainProgress("LM steps", 100, interval=30, clock=clock)
    progress.advance(10, info="20.5k tokens  loss 3.210  9,000 tok/s")  # a resumed run: starts at 10
    for _ in range(10):  # 10 steps in 50 s: no line before 30 s have passed
        clock.now += 5
        progress.advance(1, info="loss 3.000")
    progress.finish()
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["LM steps 10/100 (10%) | 20.5k tokens  loss 3.210  9,000 tok/s | elapsed 0:00",
                     # 6 steps in 30 s since the first advance: 84 steps left take 7 minutes
                     "LM steps 16/100 (16%) | loss 3.000 | elapsed 0:30, left 7:00",
                     "LM steps 20/100 (20%) | loss 3.000 | elapsed 0:50, left 6:40"]


def test_transient_progress_writes_nothing(capsys):
    progress = PlainProgress("layer swap", 4, enabled=False, interval=0)
    for _ in range(4):
        progress.advance()
    progress.finish()
    assert capsys.readouterr().err == ""


def test_training_log_lines_when_stderr_is_a_file(tmp_path):
    from tests.helpers import HANG_GUARD_SECONDS, REPO_ROOT, tiny_config, write_config

    config = write_config(tmp_path / "tiny.yaml", tiny_config())
    with open(tmp_path / "log.txt", "w") as log:
        result = subprocess.run([sys.executable, "-m", "phasescope.cli", "train", str(config), "--out",
                                 str(tmp_path / "run")], stderr=log, stdout=subprocess.DEVNULL, cwd=REPO_ROOT,
                                env={**os.environ, "PHASESCOPE_LOG_SECONDS": "0"}, timeout=HANG_GUARD_SECONDS)
    assert result.returncode == 0
    lines = (tmp_path / "log.txt").read_text().splitlines()
    steps = [line for line in lines if line.startswith("LM steps ")]
    # every log point (4, 8, 12) is a line with step, tokens, loss, throughput
    assert [line.split(" | ")[0] for line in steps] == ["LM steps 0/12 (0%)", "LM steps 4/12 (33%)",
                                                        "LM steps 8/12 (67%)", "LM steps 12/12 (100%)"]
    assert steps[1].split(" | ")[1].startswith("1.02k tokens  loss ") and "tok/s" in steps[1]
    assert ", left " in steps[1] and "\x1b[" not in "".join(lines)  # plain text, no terminal codes


def test_format_tokens():
    assert [format_tokens(v) for v in (None, 999, 1234, 1_234_567, 2.5e9)] == ["?", "999", "1.23k", "1.23M", "2.5B"]
    assert not console.is_terminal  # under pytest stderr is captured: the plain lines are what runs here
