"""The first run's ONNX export: how long it takes, and that its graph matches PyTorch.

    python benchmarks/bench_onnx_export.py             # the shipped default model version
    python benchmarks/bench_onnx_export.py --model models/<version>

Exports the model version twice, each in a fresh subprocess-free call on this machine:
1. as shipped (worker.backends.export_onnx): the bare network traced once, the card's flips
   and temperature added to its graph (worker.onnx_graph);
2. as before: the flip-averaged, tempered module handed to the exporter whole, which traces
   the network once per flipped copy.
Prints each export's seconds, the ratio (target: the shipped export at most 0.5x the whole-
module one for a four-way flip average), the largest logit difference of each graph from the
PyTorch module on a few shapes, and ONNX Runtime's seconds per batch for both graphs (the same
arithmetic: the two should run alike). The machine's load is printed beside: other work on the
cores slows both exports alike, so the ratio is the figure to compare.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_RATIO = 0.5
SHAPES = ((2, 3, 320, 320), (1, 3, 224, 288), (4, 3, 480, 480))


def export_whole_module(model_dir: Path, card: object, path: Path) -> None:
    """The previous export: the module as the card runs it, flips included, traced whole."""
    from worker.backends import trace_to_onnx
    from worker.model import for_inference, load_network

    network = for_inference(load_network(model_dir, card), card)
    trace_to_onnx(network, card.input_size, path, uint8_input=True)  # type: ignore[attr-defined]


def timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


def compare(
    paths: dict[str, Path], network: object, batches: list[np.ndarray], repeats: int = 3
) -> dict[str, tuple[float, float]]:
    """Per graph: the largest logit difference from the module, and ONNX Runtime's seconds per
    batch (the best of `repeats`, the graphs taking turns so that load hits both alike)."""
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = {
        name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for name, path in paths.items()
    }
    difference = dict.fromkeys(paths, 0.0)
    seconds = dict.fromkeys(paths, 0.0)
    for batch in batches:
        with torch.inference_mode():
            expected = network(torch.from_numpy(batch)).numpy()  # type: ignore[operator]
        best = dict.fromkeys(paths, float("inf"))
        for _ in range(repeats):
            for name, session in sessions.items():
                started = time.perf_counter()
                (logits,) = session.run(None, {"image": batch})
                best[name] = min(best[name], time.perf_counter() - started)
                difference[name] = max(difference[name], float(np.abs(logits - expected).max()))
        for name in paths:
            seconds[name] += best[name] / len(batches)
    return {name: (difference[name], seconds[name]) for name in paths}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="A model version folder.")
    arguments = parser.parse_args()

    from jewelcut.modelcard import ModelCard, default_model_dir
    from jewelcut.settings import DEFAULT_MODELS_DIR
    from worker.backends import export_onnx
    from worker.model import for_inference, load_network

    model_dir = arguments.model or default_model_dir(DEFAULT_MODELS_DIR)
    card = ModelCard.read(model_dir)
    print(f"model {card.name}: flips {card.test_time_flips}, temperature {card.logit_temperature}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in SHAPES]
    network = for_inference(load_network(model_dir, card), card)
    with tempfile.TemporaryDirectory() as work:
        shipped, whole = Path(work) / "shipped.onnx", Path(work) / "whole.onnx"
        shipped_s = timed(lambda: export_onnx(model_dir, card, shipped))
        whole_s = timed(lambda: export_whole_module(model_dir, card, whole))
        results = compare({"shipped": shipped, "whole module": whole}, network, batches)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"export, shipped (bare network + flips in the graph): {shipped_s:.1f} s")
    print(f"export, whole flip-averaged module:                 {whole_s:.1f} s")
    ratio = shipped_s / whole_s
    verdict = "ok" if ratio <= TARGET_RATIO else "ABOVE TARGET"
    print(f"ratio {ratio:.2f} (target <= {TARGET_RATIO}): {verdict}")
    for name, (difference, seconds) in results.items():
        print(f"{name}: max |logit - torch| {difference:.2e}, ORT {seconds:.2f} s per batch")


if __name__ == "__main__":
    main()
