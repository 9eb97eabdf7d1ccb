"""The training loop: schedule, deterministic sample order, checkpoints and resume."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from training.config import FitConfig, load_config
from training.fit import (
    LAST,
    Trainer,
    autocast_dtype,
    batch_indices,
    learning_rate,
    logits_at_input_size,
    outline_band,
    outline_weighted_bce,
    run_fit,
)


def tiny_config(data: Path, steps: int) -> FitConfig:
    return FitConfig(
        name="tiny",
        train_data=[str(data)],
        val_data=str(data),
        crop=64,
        batch_size=2,
        steps=steps,
        warmup_steps=1,
        val_every=100,
        checkpoint_every_s=3600,
        input_size=96,
    )


def test_schedule_warms_up_then_follows_a_cosine_to_the_floor() -> None:
    config = FitConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-5)
    assert learning_rate(config, 0) == pytest.approx(1e-4)
    assert learning_rate(config, 10) == pytest.approx(1e-3, rel=0.03)
    assert learning_rate(config, 100) == pytest.approx(1e-5)
    timed = config.model_copy(update={"time_budget_s": 50.0})
    assert learning_rate(timed, 20, seconds=50.0) == pytest.approx(1e-5), "the time budget ends it"


def test_the_outline_band_covers_the_pixels_near_the_outline_on_both_sides() -> None:
    target = torch.zeros(1, 12, 12)
    target[0, 4:8, 4:8] = 1
    band = outline_band(target, width=1)[0]
    assert band[3, 5] == 1 and band[4, 5] == 1  # just outside and just inside the square
    assert band[0, 0] == 0 and band[11, 11] == 0  # far outside
    wide = torch.zeros(1, 12, 12)
    wide[0, 1:11, 1:11] = 1
    assert outline_band(wide, width=1)[0, 5, 5] == 0  # deep inside


def test_outline_weight_makes_an_error_at_the_outline_cost_more_than_one_inside() -> None:
    target = torch.zeros(1, 16, 16)
    target[0, 2:14, 2:14] = 1
    confident = torch.where(target > 0, 6.0, -6.0)
    at_outline, deep_inside = confident.clone(), confident.clone()
    at_outline[0, 2, 8] = -6.0  # the mask's edge row, missed
    deep_inside[0, 8, 8] = -6.0
    plain = torch.nn.functional.binary_cross_entropy_with_logits(confident, target)
    assert outline_weighted_bce(confident, target, 0.0, 2) == pytest.approx(float(plain))
    weighted = [outline_weighted_bce(x, target, 4.0, 2) for x in (at_outline, deep_inside)]
    assert weighted[0] > 2 * weighted[1]


class ShapeRecorder(torch.nn.Module):
    """A stand-in network: its logits are the first input channel; it notes each input's size."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(images.shape[-2:]))
        return images[:, :1]


def test_validation_sees_images_at_the_input_size_and_scores_them_at_their_own() -> None:
    images = torch.full((2, 3, 72, 96), -1.0)
    images[:, :, 24:48, 32:64] = 1.0  # a block the logits must find again at 96 x 72
    network = ShapeRecorder()

    logits = logits_at_input_size(network, images, input_size=128)

    assert network.seen == [(96, 128)]  # longer side 128, both sides multiples of the stride
    assert logits.shape == (2, 72, 96)
    assert torch.equal(logits > 0, images[:, 0] > 0)
    logits_at_input_size(network, images, input_size=96)
    assert network.seen[-1] == (72, 96)  # already at the input size: shown as it is


def test_sample_order_is_a_seeded_permutation_per_epoch() -> None:
    epoch = [i for step in range(5) for i in batch_indices(step, 2, 10, seed=3)]
    assert sorted(epoch) == list(range(10))
    assert epoch == [i for step in range(5) for i in batch_indices(step, 2, 10, seed=3)]
    assert epoch != [i for step in range(5) for i in batch_indices(step, 2, 10, seed=4)]


class Interrupted(Exception):
    pass


def stop_after(step: int) -> Callable[[Trainer], None]:
    def on_step(trainer: Trainer) -> None:
        if trainer.state.step == step:
            raise Interrupted  # as if the process were killed right after this step

    return on_step


@pytest.mark.slow
def test_resume_continues_exactly_where_the_run_stopped(tiny_dataset: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_dataset, 3).model_copy(update={"checkpoint_every_s": 0.0})
    straight = run_fit(config, tmp_path / "straight")
    # The interrupted run loads its batches in two worker processes: same batches, same order.
    with_workers = config.model_copy(update={"loader_workers": 2})
    with pytest.raises(Interrupted):
        run_fit(with_workers, tmp_path / "stopped", on_step=stop_after(2))
    checkpoint = Trainer(config, tmp_path / "stopped")
    checkpoint.resume(tmp_path / "stopped" / "checkpoints" / LAST)
    assert checkpoint.state.step == 2
    resumed = run_fit(with_workers, tmp_path / "stopped", resume=True)
    assert resumed.state.step == 3
    for (name, a), (_, b) in zip(
        straight.network.state_dict().items(), resumed.network.state_dict().items(), strict=True
    ):
        if a.is_floating_point():
            assert torch.allclose(a, b, atol=1e-5), name
    assert load_config(tmp_path / "stopped" / "config.yaml") == with_workers, "one config per run"
    assert 0.0 <= straight.state.best_val_iou <= 1.0
    assert np.isfinite(straight.state.last_loss)


def test_init_from_starts_with_the_weights_of_an_earlier_run(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    earlier = run_fit(tiny_config(tiny_dataset, 2), tmp_path / "earlier")
    config = tiny_config(tiny_dataset, 1).model_copy(
        update={"init_from": str(tmp_path / "earlier" / "checkpoints" / LAST), "seed": 5}
    )
    warm = Trainer(config, tmp_path / "warm")
    for (name, a), (_, b) in zip(
        earlier.network.state_dict().items(), warm.network.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert warm.state.step == 0, "only the weights carry over"

    wrong = config.model_copy(
        update={"architecture": config.architecture.model_copy(update={"classes": 2})}
    )
    with pytest.raises(ValueError, match="init_from"):
        Trainer(wrong, tmp_path / "wrong")


def test_bf16_autocast_trains_on_the_cpu(tiny_dataset: Path, tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    assert autocast_dtype(FitConfig(), cpu) is None, "auto: float32 on the CPU"
    assert autocast_dtype(FitConfig(), torch.device("cuda")) == torch.float16
    config = tiny_config(tiny_dataset, 2).model_copy(update={"amp": "bf16"})
    assert autocast_dtype(config, cpu) == torch.bfloat16
    trainer = run_fit(config, tmp_path / "bf16")
    assert trainer.state.step == 2 and np.isfinite(trainer.state.last_loss)
    assert not trainer.scaler.is_enabled(), "bfloat16 needs no loss scaling"
    weights = next(trainer.network.parameters())
    assert weights.dtype == torch.float32, "autocast keeps the weights in float32"


def test_fit_command_overrides_steps_and_time_budget(tiny_dataset: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from jewelcut.cli import app
    from training.config import save_config

    save_config(tiny_config(tiny_dataset, 5), tmp_path / "tiny.yaml")
    run = tmp_path / "run"
    arguments = ["--config", str(tmp_path / "tiny.yaml"), "--steps", "1", "--time-budget-s", "60"]
    outcome = CliRunner().invoke(app, ["train", "fit", str(run), *arguments])
    assert outcome.exit_code == 0, outcome.output
    recorded = load_config(run / "config.yaml")
    assert (recorded.steps, recorded.time_budget_s) == (1, 60.0)
    assert "done step 1" in outcome.output


def test_frozen_encoder_blocks_keep_their_weights_and_the_rest_trains(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    config = tiny_config(tiny_dataset, 2).model_copy(update={"frozen_encoder_blocks": 5})
    trainer = Trainer(config, tmp_path / "frozen")
    before = {k: v.clone() for k, v in trainer.network.named_parameters()}
    run = run_fit(config, tmp_path / "frozen")
    after = dict(run.network.named_parameters())
    frozen = [n for n in before if n.startswith(("encoder._conv_stem", "encoder._bn0"))]
    frozen += [n for n in before if any(n.startswith(f"encoder._blocks.{i}.") for i in range(5))]
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
    assert not torch.equal(
        before["encoder._blocks.5._project_conv.weight"],
        after["encoder._blocks.5._project_conv.weight"],
    ), "block 5 trains"
    assert not any(p.requires_grad for n, p in after.items() if n in frozen)
    with pytest.raises(ValueError, match="frozen_encoder_blocks"):
        Trainer(config.model_copy(update={"frozen_encoder_blocks": 99}), tmp_path / "too-many")


def test_the_weights_average_is_validated_saved_and_loaded_for_export(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    from training.checkpoint import load_checkpoint_network

    config = tiny_config(tiny_dataset, 3).model_copy(update={"ema_decay": 0.5})
    start = Trainer(config, tmp_path / "start").network.state_dict()
    trainer = run_fit(config, tmp_path / "ema")
    raw, average = trainer.network.state_dict(), trainer.average.state_dict()
    name = "decoder.blocks.0.conv1.0.weight"
    assert not torch.equal(raw[name], average[name]), "the average lags the trained weights"
    between = (average[name] - start[name]).abs().sum() < (raw[name] - start[name]).abs().sum()
    assert between, "three steps at decay 0.5 keep part of the start"
    loaded, _ = load_checkpoint_network(tmp_path / "ema" / "checkpoints" / LAST)
    assert torch.equal(loaded.state_dict()[name], average[name]), "export takes the average"
    resumed = Trainer(config, tmp_path / "ema")
    resumed.resume()
    assert torch.equal(resumed.average.state_dict()[name], average[name])
    assert torch.equal(resumed.network.state_dict()[name], raw[name])
