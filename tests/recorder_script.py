"""A user's plain training loop with the recorder, run by tests/test_recorder.py as a subprocess.

    python tests/recorder_script.py OUT STEPS [ddp|fsdp]    # under torchrun for ddp / fsdp

Full-batch GD on fixed data (the same batches whatever the process count: each of N processes takes
its 1/N of the rows, and DDP/FSDP average the gradients). Restarted on the same OUT, it resumes from
the recorder's latest checkpoint (as a user's loop resumes from its own) and continues to STEPS.
Writes OUT.rank<R>.json: whether this process opened the run directory (wrote anything).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from phasescope.integrations import Recorder
from phasescope.run import RunDir

WIDTH = 256  # large enough that a checkpoint write takes a while (the SIGKILL test lands inside writes)


def model_and_data() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, WIDTH), nn.Tanh(), nn.Linear(WIDTH, WIDTH), nn.Tanh(), nn.Linear(WIDTH, 1))
    inputs = torch.randn(64, 16)
    return model, inputs, inputs[:, :1].sin()


def main() -> None:
    out, steps = Path(sys.argv[1]), int(sys.argv[2])
    strategy = sys.argv[3] if len(sys.argv) > 3 else None
    rank, world = 0, 1
    if strategy:
        torch.distributed.init_process_group("gloo")
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    model, inputs, targets = model_and_data()
    start, momenta = 0, {}
    latest = RunDir(out).latest_checkpoint() if (out / "config.yaml").is_file() else None
    if latest is not None:  # the user's loop resumes from its own checkpoint: weights and momenta
        model.load_state_dict(load_file(str(latest.path / "model.safetensors")))
        if (latest.path / "state.safetensors").is_file():
            momenta = load_file(str(latest.path / "state.safetensors"))
        start = latest.step
    trained = model
    if strategy == "ddp":
        trained = nn.parallel.DistributedDataParallel(model)
    elif strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        trained = fully_shard(model)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.05, momentum=0.9)
    for name, parameter in model.named_parameters():
        if f"optimizer.{name}.momentum_buffer" in momenta:
            optimizer.state[parameter]["momentum_buffer"] = momenta[f"optimizer.{name}.momentum_buffer"].clone()
    rows = slice(rank * len(inputs) // world, (rank + 1) * len(inputs) // world)
    measures = [] if strategy == "fsdp" else ["norms"]
    recorder = Recorder(out, schedule=1, measures=measures)
    recorder.step(trained, optimizer, step=start)
    for step in range(start, steps):
        optimizer.zero_grad()
        nn.functional.mse_loss(trained(inputs[rows]), targets[rows]).backward()
        optimizer.step()
        recorder.step(trained, optimizer, step=step + 1)
    Path(f"{out}.rank{rank}.json").write_text(json.dumps({"opened": recorder.run is not None}))
    if strategy:
        torch.distributed.barrier()  # leave together: rank 0 still writes after rank 1's last step
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
