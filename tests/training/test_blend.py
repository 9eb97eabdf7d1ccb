"""`train blend`: a fine-tuned run blended with the weights it started from (WiSE-FT)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from jewelcut.cli import app
from jewelcut.modelcard import ModelCard
from training.blend import blended_state
from training.checkpoint import load_any
from training.config import FitConfig
from training.fit import LAST, run_fit
from worker.model import save_random_init


def test_blended_tensors_lie_between_the_two_and_counters_stay_the_runs() -> None:
    run = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(7)}
    base = {"w": torch.tensor([3.0, -1.0]), "n": torch.tensor(2)}
    blended = blended_state(run, base, 0.25)
    assert torch.allclose(blended["w"], torch.tensor([2.5, 0.0]))
    assert blended["n"] == 7
    assert torch.equal(blended_state(run, base, 1.0)["w"], run["w"])
    with pytest.raises(ValueError, match="differ"):
        blended_state(run, {"w": base["w"]}, 0.5)


def test_blend_command_writes_a_checkpoint_that_exports_with_its_record(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    base = save_random_init(tmp_path / "models", input_size=96, name="base")
    config = FitConfig(
        name="tiny",
        train_data=[str(tiny_dataset)],
        init_from=str(base),
        input_size=96,
        crop=64,
        batch_size=2,
        steps=2,
        warmup_steps=1,
    )
    run_fit(config, tmp_path / "run")
    checkpoint, out = tmp_path / "run" / "checkpoints" / LAST, tmp_path / "blend.pt"
    runner = CliRunner()

    args = ["train", "blend", str(checkpoint), "--base", str(base), "--out", str(out)]
    outcome = runner.invoke(app, [*args, "--weight", "0.5"])
    assert outcome.exit_code == 0, outcome.output

    blended = load_any(out)[0].state_dict()
    tuned, start = load_any(checkpoint)[0].state_dict(), load_any(base)[0].float().state_dict()
    key = "segmentation_head.0.weight"
    assert not torch.equal(tuned[key], start[key]), "the run moved the head"
    assert torch.allclose(blended[key], (tuned[key] + start[key]) / 2, atol=1e-6)

    exported = runner.invoke(app, ["train", "export", str(out), "--out", str(tmp_path / "v")])
    assert exported.exit_code == 0, exported.output
    card = ModelCard.read(tmp_path / "v" / "tiny")
    assert card.training["blend"] == {"run": str(checkpoint), "base": str(base), "weight": 0.5}

    written = out.read_bytes()
    refused = runner.invoke(app, [*args, "--weight", "1.5"])
    assert refused.exit_code == 2 and "blend weight" in refused.output
    assert out.read_bytes() == written, "a refused blend leaves the earlier one as it was"
