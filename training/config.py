"""Run configurations: one YAML/JSON file per run, written into the run folder when it starts.
Presets give the figures the project uses (`smoke` for CI, `default` for the shipped model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

from jewelcut.modelcard import Architecture

CONFIG_FILE = "config.yaml"


class SynthConfig(BaseModel):
    train_count: int = 7000
    val_count: int = 128
    eval_count: int = 500
    size: int = 320  # square training composites; crops of `FitConfig.crop` are trained on
    eval_width: int = 480  # held-out photos are listing-shaped (landscape/portrait/square)
    eval_height: int = 360
    train_seed: int = 1
    val_seed: int = 2
    eval_seed: int = 20261126  # held-out set: its own seed, never used for training
    object_size: int = 384


class FitConfig(BaseModel):
    name: str = "default"
    architecture: Architecture = Field(default_factory=Architecture)
    input_size: int = 320  # the card's inference size (longest side)
    train_data: list[str] = Field(default_factory=list)
    val_data: str | None = None
    # Warm start: the network weights of a model version directory or a checkpoint (.pt); the
    # optimiser, schedule and step count start afresh.
    init_from: str | None = None
    crop: int = 256  # side of the square the network trains on
    # Random crops of this share of the shorter side, resized to `crop`. Shares under
    # crop / side magnify: a model meant for a larger `input_size` must see objects as many
    # pixels across as the worker will show it (a 480-pixel photo at input 384 is 1.2x the size
    # of the same scene in a 320 composite).
    crop_scale: tuple[float, float] = (1.0, 1.0)
    batch_size: int = 8
    steps: int = 1500
    # Optional wall-clock budget (training seconds, summed over resumes): the schedule then
    # follows whichever of steps or time runs out first, and the run stops there.
    time_budget_s: float | None = None
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_steps: int = 50
    schedule: Literal["cosine", "constant"] = "cosine"
    loss: Literal["bce", "bce+dice"] = "bce"
    # Extra BCE weight on pixels within `outline_width` px of the true outline, on both sides:
    # IoU on real jewellery is lost at the outlines of thin parts (wires, chains, prongs), which
    # are a small share of the pixels the plain mean weighs. 0: every pixel weighs the same.
    outline_weight: float = 0.0
    outline_width: int = 2
    # The encoder's BatchNorm comes with momentum 0.01 (TF's 0.99): on a short run its running
    # statistics lag the weights so far that eval-mode output was empty at step 300.
    bn_momentum: float = 0.1
    # Keep the encoder's stem and its first N blocks as init_from left them: their gradients are
    # never computed, so the backward pass stops early (on this CPU, 5 of efficientnet-b3's 26
    # blocks frozen make a step ~1.5x faster). Their generic edge and colour features stay.
    frozen_encoder_blocks: int = 0
    # An exponential moving average of the weights (and BatchNorm statistics), updated after each
    # step with this decay; it is what is validated, kept as best.pt and exported. None: off.
    ema_decay: float | None = None
    seed: int = 0
    val_every: int = 150
    checkpoint_every_s: float = 300.0
    threads: int = 2
    # Processes that load and augment batches ahead of the step. None: none on CPU (they would
    # take the cores the step runs on), up to 8 on CUDA (one process cannot feed a GPU).
    loader_workers: int | None = None
    # auto: float16 autocast on CUDA, none on CPU. bf16: bfloat16 autocast on either (no loss
    # scaling needed); on a CPU with AVX512-BF16 or AMX a step takes ~0.7x the float32 time.
    amp: Literal["auto", "off", "bf16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Preset(BaseModel):
    synth: SynthConfig
    fit: FitConfig

    def fit_on(self, data: Path) -> FitConfig:
        """The preset's run on a dataset its synth wrote (`data`/train, `data`/val)."""
        return self.fit.model_copy(
            update={"train_data": [str(data / "train")], "val_data": str(data / "val")}
        )


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        synth=SynthConfig(
            train_count=24,
            val_count=8,
            eval_count=12,
            size=128,
            eval_width=128,
            eval_height=96,
            object_size=128,
        ),
        fit=FitConfig(
            name="smoke",
            input_size=128,
            crop=96,
            batch_size=4,
            steps=6,
            warmup_steps=2,
            val_every=3,
            checkpoint_every_s=3600,
            lr=1e-3,
        ),
    ),
    "default": Preset(synth=SynthConfig(), fit=FitConfig()),
}


def load_config(path: Path) -> FitConfig:
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return FitConfig.model_validate(data)


def save_config(config: FitConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
