"""A blend of a fine-tuned run with the weights it started from: every floating-point weight
and BatchNorm statistic is `weight * run + (1 - weight) * base` (WiSE-FT, Wortsman et al.,
2022). A run fine-tuned on new data forgets some of the old; the blend trades the two along one
dial, chosen on dev sets of both. The result is a checkpoint that export and evaluate take."""

from __future__ import annotations

from pathlib import Path

import torch

from training.checkpoint import load_any, load_checkpoint_network, write_checkpoint


def blended_state(
    run: dict[str, torch.Tensor], base: dict[str, torch.Tensor], weight: float
) -> dict[str, torch.Tensor]:
    """`weight` of the run's tensors and the rest of the base's; integer tensors (BatchNorm's
    batch counters) stay the run's."""
    if run.keys() != base.keys():
        missing = sorted(run.keys() ^ base.keys())[:3]
        raise ValueError(f"the two networks differ in their tensors ({', '.join(missing)}, ...)")
    blended = {}
    for key, tensor in run.items():
        other = base[key].to(tensor.device)
        if other.shape != tensor.shape:
            raise ValueError(
                f"{key} is {tuple(tensor.shape)} in the run, {tuple(other.shape)} in the base"
            )
        blended[key] = (
            torch.lerp(other.float(), tensor.float(), weight).to(tensor.dtype)
            if tensor.is_floating_point()
            else tensor.clone()
        )
    return blended


def blend_checkpoint(run_checkpoint: Path, base: Path, weight: float, out: Path) -> Path:
    """Write `out`: the run checkpoint's evaluated weights (its moving average when it kept
    one) blended with `base` (a model version or checkpoint), with the run's config and state
    and a record of the blend, which the exported card's training record carries."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the blend weight is {weight}: give one from 0 (base) to 1 (run)")
    run_network, run = load_checkpoint_network(run_checkpoint)
    base_network, _, _ = load_any(base)
    blended = blended_state(run_network.state_dict(), base_network.float().state_dict(), weight)
    state = {
        **run["state"],
        "blend": {"run": str(run_checkpoint), "base": str(base), "weight": weight},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": blended, "state": state, "config": run["config"].to_dict()}
    return write_checkpoint(payload, out)
