"""The training loop: smp Unet (worker.model.build_unet), BCEWithLogitsLoss + Adam as in the
study, warmup + cosine learning rate over the planned steps, deterministic sample order,
checkpoints (model + optimiser + step) every few minutes, `resume`, periodic validation IoU.

Run folder layout: config.yaml, checkpoints/last.pt, checkpoints/best.pt, log.jsonl.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from jewelcut.modelcard import IMAGENET_MEAN, IMAGENET_STD
from training.checkpoint import load_any, write_checkpoint
from training.config import CONFIG_FILE, FitConfig, save_config
from training.dataset import SegmentationFolder
from worker.model import build_unet
from worker.preprocess import STRIDE

LAST = "last.pt"
BEST = "best.pt"


@dataclass
class FitState:
    step: int = 0
    best_val_iou: float = -1.0
    last_val_iou: float | None = None
    last_loss: float | None = None
    seconds: float = 0.0  # training time accumulated over resumes


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def progress_of(config: FitConfig, step: int, seconds: float = 0.0) -> float:
    """How far through the run (0..1): by steps, or by the time budget if that runs out first."""
    by_steps = step / max(config.steps, 1)
    by_time = seconds / config.time_budget_s if config.time_budget_s else 0.0
    return min(max(by_steps, by_time), 1.0)


def learning_rate(config: FitConfig, step: int, seconds: float = 0.0) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    cosine = 0.5 * (1 + math.cos(math.pi * progress_of(config, step, seconds)))
    return config.min_lr + (config.lr - config.min_lr) * cosine


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    probability = torch.sigmoid(logits)
    overlap = (probability * target).sum(dim=(1, 2))
    total = probability.sum(dim=(1, 2)) + target.sum(dim=(1, 2))
    return (1 - (2 * overlap + 1) / (total + 1)).mean()


def outline_band(target: torch.Tensor, width: int) -> torch.Tensor:
    """1 where a pixel lies within `width` px of the mask's outline (inside or out), else 0."""
    size = 2 * width + 1
    grown = nn.functional.max_pool2d(target[:, None], size, stride=1, padding=width)
    shrunk = -nn.functional.max_pool2d(-target[:, None], size, stride=1, padding=width)
    return (grown - shrunk)[:, 0]


def outline_weighted_bce(
    logits: torch.Tensor, target: torch.Tensor, weight: float, width: int
) -> torch.Tensor:
    """BCE where outline pixels weigh 1 + `weight`, normalised so its scale matches plain BCE."""
    if weight == 0:
        return nn.functional.binary_cross_entropy_with_logits(logits, target)
    weights = 1 + weight * outline_band(target, width)
    per_pixel = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (weights * per_pixel).sum() / weights.sum()


def make_loss(config: FitConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value = outline_weighted_bce(logits, target, config.outline_weight, config.outline_width)
        if config.loss == "bce+dice":
            value = value + soft_dice_loss(logits, target)
        return value

    return loss


def autocast_dtype(config: FitConfig, device: torch.device) -> torch.dtype | None:
    """The mixed-precision type of the forward pass, or None for plain float32."""
    if config.amp == "bf16":
        return torch.bfloat16
    if config.amp == "auto" and device.type == "cuda":
        return torch.float16
    return None


def logits_at_input_size(network: nn.Module, images: torch.Tensor, input_size: int) -> torch.Tensor:
    """[N,H,W] logits for images [N,3,H,W] resized so the longer side is `input_size` (sizes
    kept to the network's stride) and the logits resized back to H x W."""
    height, width = images.shape[-2:]
    scale = input_size / max(height, width)
    if scale == 1:
        return network(images.contiguous(memory_format=torch.channels_last))[:, 0]
    size = [max(STRIDE, round(side * scale / STRIDE) * STRIDE) for side in (height, width)]
    resized = nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False)
    logits = network(resized.contiguous(memory_format=torch.channels_last))
    return nn.functional.interpolate(
        logits.float(), size=(height, width), mode="bilinear", align_corners=False
    )[:, 0]


def set_bn_momentum(network: nn.Module, momentum: float | None) -> None:
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = momentum


def freeze_early_encoder(network: nn.Module, blocks: int) -> None:
    """Stop training the encoder's stem and first `blocks` blocks (smp's EfficientNet encoders)."""
    if blocks <= 0:
        return
    encoder = network.encoder
    stages = getattr(encoder, "_blocks", None)
    if stages is None or blocks > len(stages):
        raise ValueError(
            f"frozen_encoder_blocks={blocks}: the encoder {type(encoder).__name__} has "
            f"{len(stages) if stages is not None else 'no'} EfficientNet blocks"
        )
    for module in [encoder._conv_stem, encoder._bn0, *stages[:blocks]]:
        module.requires_grad_(False)


def averaged_copy(network: nn.Module) -> nn.Module:
    """The start of a moving average of `network`: a copy that is never trained directly."""
    average = copy.deepcopy(network)
    average.requires_grad_(False)
    return average


@torch.no_grad()
def update_average(average: nn.Module, network: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * network, BatchNorm statistics included."""
    current = network.state_dict()
    for name, value in average.state_dict().items():
        if value.is_floating_point():
            value.lerp_(current[name], 1 - decay)
        else:
            value.copy_(current[name])


def batch_indices(step: int, batch_size: int, size: int, seed: int) -> list[int]:
    """Indices of the samples of `step`: a fresh permutation per epoch, fixed by the seed, so a
    resumed run sees exactly the samples the uninterrupted run would have seen."""
    indices = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, size)
        order = np.random.default_rng(np.random.SeedSequence([seed, epoch])).permutation(size)
        indices.append(int(order[offset]))
    return indices


def load_batch(
    dataset: SegmentationFolder, indices: list[int], epoch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    dataset.epoch = epoch
    pairs = [dataset[i] for i in indices]
    images = torch.from_numpy(np.stack([p[0] for p in pairs]))
    targets = torch.from_numpy(np.stack([p[1] for p in pairs]))
    return images, targets


class StepBatches(Dataset):
    """Item k is the batch of training step `first_step + k`: loaded here or in loader worker
    processes, a run sees the same batches in the same order."""

    def __init__(self, dataset: SegmentationFolder, config: FitConfig, first_step: int) -> None:
        self.dataset = dataset
        self.batch_size = config.batch_size
        self.seed = config.seed
        self.first_step = first_step
        self.steps = config.steps

    def __len__(self) -> int:
        return max(0, self.steps - self.first_step)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        step = self.first_step + item
        indices = batch_indices(step, self.batch_size, len(self.dataset), self.seed)
        epoch = step * self.batch_size // len(self.dataset)
        return load_batch(self.dataset, indices, epoch)


def loader_workers(config: FitConfig, device: torch.device) -> int:
    if config.loader_workers is not None:
        return config.loader_workers
    return min(8, (os.cpu_count() or 1) - 1) if device.type == "cuda" else 0


def _single_threaded_worker(_worker_id: int) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


class Trainer:
    def __init__(self, config: FitConfig, run_dir: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        self.device = pick_device(config.device)
        torch.set_num_threads(config.threads)
        seed_everything(config.seed)
        self.network = build_unet(config.architecture).to(self.device)
        self.network = self.network.to(memory_format=torch.channels_last)
        if config.init_from:
            self.load_initial_weights(Path(config.init_from))
        set_bn_momentum(self.network, config.bn_momentum)
        freeze_early_encoder(self.network, config.frozen_encoder_blocks)
        self.average = averaged_copy(self.network) if config.ema_decay else None
        trained = [p for p in self.network.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trained, lr=config.lr)
        self.autocast_dtype = autocast_dtype(config, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)
        self.loss = make_loss(config)
        self.state = FitState()
        folders = [Path(p) for p in config.train_data]
        self.train_set = SegmentationFolder(
            folders, IMAGENET_MEAN, IMAGENET_STD, config.crop, config.seed, config.crop_scale
        )
        self.val_set = (
            SegmentationFolder([Path(config.val_data)], IMAGENET_MEAN, IMAGENET_STD)
            if config.val_data
            else None
        )

    def load_initial_weights(self, source: Path) -> None:
        network, card, _ = load_any(source)
        if card.architecture != self.config.architecture:
            raise ValueError(
                f"init_from {source} is a {card.architecture}, not the run's "
                f"{self.config.architecture}"
            )
        self.network.load_state_dict(network.state_dict())

    @property
    def evaluated_network(self) -> nn.Module:
        """What is validated and exported: the weights' moving average when there is one."""
        return self.average if self.average is not None else self.network

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    # --- checkpoints ----------------------------------------------------------------------------

    def save(self, name: str) -> Path:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / name
        payload = {
            "model": self.network.state_dict(),
            "average": self.average.state_dict() if self.average is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "state": self.state.__dict__,
            "config": self.config.to_dict(),
            # drop-connect in the encoder draws from torch's generator: resume it too
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
        }
        return write_checkpoint(payload, path)

    def resume(self, path: Path | None = None) -> None:
        payload = torch.load(path or self.checkpoint_dir / LAST, map_location=self.device)
        self.network.load_state_dict(payload["model"])
        if self.average is not None:
            self.average.load_state_dict(payload.get("average") or payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scaler.load_state_dict(payload["scaler"])
        self.state = FitState(**payload["state"])
        if "torch_rng" in payload:
            torch.set_rng_state(payload["torch_rng"])
        if payload.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(payload["cuda_rng"])

    # --- steps ----------------------------------------------------------------------------------

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of the steps from the current one on."""
        workers = loader_workers(self.config, self.device)
        return iter(
            DataLoader(
                StepBatches(self.train_set, self.config, self.state.step),
                batch_size=None,
                num_workers=workers,
                prefetch_factor=4 if workers else None,
                worker_init_fn=_single_threaded_worker if workers else None,
                # forked from a process whose OpenMP/OpenCV thread pools already ran, a worker
                # could hang for good; spawned ones start clean
                multiprocessing_context="spawn" if workers else None,
                # its own seed source: drawing from torch's would shift a resumed run's dropout
                generator=torch.Generator().manual_seed(self.config.seed),
                pin_memory=self.device.type == "cuda",
            )
        )

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        config = self.config
        step = self.state.step
        images = batch[0].to(self.device, memory_format=torch.channels_last, non_blocking=True)
        targets = batch[1].to(self.device, non_blocking=True)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(config, step, self.state.seconds)
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(
            self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        ):
            logits = self.network(images)[:, 0]
        loss = self.loss(logits.float(), targets)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.average is not None:
            update_average(self.average, self.network, config.ema_decay or 0.0)
        self.state.step += 1
        self.state.last_loss = float(loss.detach())
        return self.state.last_loss

    @torch.inference_mode()
    def validate(self) -> float:
        """Mean IoU of the thresholded probability (0.5) over the validation folder, each image
        seen at the card's `input_size` (as the worker shows it) and scored at its own size."""
        if self.val_set is None:
            return float("nan")
        network = self.evaluated_network.eval()
        scores = []
        for start in range(0, len(self.val_set), self.config.batch_size):
            indices = list(range(start, min(start + self.config.batch_size, len(self.val_set))))
            images, targets = load_batch(self.val_set, indices, 0)
            logits = logits_at_input_size(network, images.to(self.device), self.config.input_size)
            predicted = logits.float().cpu() > 0
            truth = targets > 0.5
            union = (predicted | truth).sum(dim=(1, 2)).clamp(min=1)
            scores.extend(((predicted & truth).sum(dim=(1, 2)) / union).tolist())
        return float(np.mean(scores))

    def log(self, record: dict[str, Any]) -> None:
        with (self.run_dir / "log.jsonl").open("a") as handle:
            handle.write(json.dumps({"time": time.time(), **record}) + "\n")


def run_fit(
    config: FitConfig,
    run_dir: Path,
    resume: bool = False,
    on_step: Callable[[Trainer], None] | None = None,
) -> Trainer:
    """Train to `config.steps` (resuming from run_dir's last checkpoint when asked)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(config, run_dir)
    if resume and (trainer.checkpoint_dir / LAST).exists():
        trainer.resume()
    else:
        save_config(config, run_dir / CONFIG_FILE)
    last_save = time.monotonic()
    batches = trainer.batches()
    while progress_of(config, trainer.state.step, trainer.state.seconds) < 1.0:
        started = time.monotonic()
        loss = trainer.train_step(next(batches))
        trainer.state.seconds += time.monotonic() - started
        step = trainer.state.step
        finished = progress_of(config, step, trainer.state.seconds) >= 1.0
        if step % config.val_every == 0 or finished:
            validate_and_keep_best(trainer)
        trainer.log({"step": step, "loss": loss, "seconds": round(trainer.state.seconds, 1)})
        if time.monotonic() - last_save >= config.checkpoint_every_s:
            trainer.save(LAST)
            last_save = time.monotonic()
        if on_step:
            on_step(trainer)
    trainer.save(LAST)
    if not (trainer.checkpoint_dir / BEST).exists():
        trainer.save(BEST)
    return trainer


def validate_and_keep_best(trainer: Trainer) -> None:
    iou = trainer.validate()
    trainer.state.last_val_iou = iou
    trainer.log({"step": trainer.state.step, "val_iou": iou})
    if math.isnan(iou) or iou > trainer.state.best_val_iou:
        trainer.state.best_val_iou = iou if not math.isnan(iou) else trainer.state.best_val_iou
        trainer.save(BEST)
