"""Inference backends behind one interface: PyTorch (GPU, or CPU as a fallback) and ONNX Runtime
(CPU). Both come from the same verified checkpoint; ONNX is exported at load time into the model
cache, keyed by the weights' sha256, so a new model version never runs a stale graph.

`predict(batch uint8 [N, 3, H, W]) -> float32 [N, H, W]` probabilities (sigmoid of logits):
the batch is RGB pixels as worker.preprocess pads them, and the network normalises them itself
(worker.normalise). H and W are multiples of 32, N is at most `batch_size` for best speed
(larger works too).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from jewelcut.modelcard import Flips, ModelCard, sha256_file, verify_weights
from worker.model import for_inference, load_network

log = logging.getLogger(__name__)

ONNX_OPSET = 18
CPU_BATCH_SIZE = 4  # network passes per call on CPU: images x (1, 2 or 4 with the flips)
MAX_GPU_BATCH_SIZE = 64
# Peak activation memory of one 320x320 image through the Unet in half precision, measured
# roughly; scaled with the pixel count. Half of the free GPU memory is given to batches.
GPU_BYTES_PER_IMAGE_AT_320 = 96 * 2**20


class InferenceBackend(Protocol):
    name: str  # "torch-cuda", "torch-cpu", "onnx-cpu"
    batch_size: int

    def predict(self, batch: np.ndarray) -> np.ndarray: ...


def make_backend(
    card: ModelCard,
    model_dir: Path,
    device: str = "auto",
    backend: str = "auto",
    cache_dir: Path | None = None,
    batch_size: int = 0,
    threads: int | None = None,
    compile_mode: str = "off",
) -> InferenceBackend:
    """auto picks torch on CUDA when there is a GPU, else ONNX Runtime on CPU. `compile_mode`:
    the torch backend's torch.compile mode, or "off"."""
    device = resolve_device(device)
    if backend == "auto":
        backend = "torch" if device == "cuda" else "onnx"
    if backend == "onnx":
        if device != "cpu":
            raise ValueError("the ONNX Runtime backend runs on CPU; use backend=torch on CUDA")
        cache = cache_dir or Path(tempfile.gettempdir()) / "jewelcut-model-cache"
        return OnnxBackend(card, model_dir, cache, batch_size or cpu_batch_size(card), threads)
    if backend == "torch":
        return TorchBackend(card, model_dir, device, batch_size, threads, compile_mode)
    raise ValueError(f"unknown backend {backend!r} (auto, torch, onnx)")


def network_passes(card: ModelCard) -> int:
    """Passes of the network per photo: the photo and its test-time flips."""
    return {Flips.NONE: 1, Flips.HORIZONTAL: 2, Flips.BOTH: 4}[card.test_time_flips]


def cpu_batch_size(card: ModelCard) -> int:
    """Photos per call on CPU. ONNX Runtime holds the activations of all of a call's passes:
    measured on the four-way 480 graph, a batch of 4 peaked at 2.1 GB, of 1 at 1.0 GB, for
    the same CPU time per photo. So CPU_BATCH_SIZE passes per call, whatever the flips."""
    return max(1, CPU_BATCH_SIZE // network_passes(card))


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchBackend:
    """inference_mode; on CUDA pinned uint8 batches, channels_last and bf16 (or fp16) autocast;
    plain fp32 on CPU. With a `compile_mode` the network goes through torch.compile with fixed
    shapes: a batch short of `batch_size` is padded to it, so each input shape (a few buckets,
    worker.preprocess) compiles once, and "reduce-overhead" replays it as a CUDA graph."""

    def __init__(
        self,
        card: ModelCard,
        model_dir: Path,
        device: str,
        batch_size: int = 0,
        threads: int | None = None,
        compile_mode: str = "off",
    ) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if cuda:
            # Few distinct shapes (multiples of 32 up to input_size): autotuning pays off.
            torch.backends.cudnn.benchmark = True
        # channels_last feeds the tensor cores; on this CPU it made the Unet several times slower.
        self.memory_format = torch.channels_last if cuda else torch.contiguous_format
        network = for_inference(load_network(model_dir, card), card, flips_in_one_batch=cuda)
        self.network = network.to(self.device, memory_format=self.memory_format)
        self.name = f"torch-{self.device.type}"
        self.autocast_dtype = _autocast_dtype(self.device)
        self._pinned_buffers: dict[tuple[int, ...], Any] = {}  # CUDA: per image shape
        self.batch_size = batch_size or (
            _default_torch_batch_size(self.device, card.input_size, network_passes(card))
            if cuda
            else cpu_batch_size(card)
        )
        self.compiled = compile_mode != "off"
        if self.compiled:
            mode = None if compile_mode == "default" else compile_mode
            self.network = torch.compile(self.network, mode=mode, dynamic=False)
            self.name += "-compiled"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import torch

        count = len(batch)
        if self.compiled and count < self.batch_size:  # one graph per shape: pad with blanks
            padding = np.zeros((self.batch_size - count, *batch.shape[1:]), batch.dtype)
            batch = np.concatenate([batch, padding])
        with torch.inference_mode():
            # uint8 to the device (a quarter of float32's bytes); normalised there (Normalised).
            tensor = torch.from_numpy(np.ascontiguousarray(pixels(batch)))
            if self.device.type == "cuda":
                tensor = self._pinned(tensor)
            tensor = tensor.to(self.device, non_blocking=True).contiguous(
                memory_format=self.memory_format
            )
            autocast = (
                torch.autocast(self.device.type, dtype=self.autocast_dtype)
                if self.autocast_dtype is not None
                else contextlib.nullcontext()
            )
            with autocast:
                logits = self.network(tensor)
            return torch.sigmoid(logits[:count].float())[:, 0].cpu().numpy()

    def _pinned(self, batch: Any) -> Any:
        """`batch` copied into page-locked memory, kept per image shape, so the copy to the
        device is one DMA and truly asynchronous. Reused safely: predict() returns only after
        its output came back, so the previous copy from the buffer is done."""
        import torch

        shape = tuple(batch.shape[1:])
        buffer = self._pinned_buffers.get(shape)
        if buffer is None or len(buffer) < len(batch):
            buffer = torch.empty((len(batch), *shape), dtype=batch.dtype).pin_memory()
            self._pinned_buffers[shape] = buffer
        return buffer[: len(batch)].copy_(batch)


def _autocast_dtype(device: Any) -> Any:
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _default_torch_batch_size(device: Any, input_size: int, passes: int = 1) -> int:
    """`passes`: network passes per photo in one batch (the flips run as one batch on CUDA)."""
    import torch

    free_bytes, _total = torch.cuda.mem_get_info(device)
    per_image = passes * GPU_BYTES_PER_IMAGE_AT_320 * (input_size / 320) ** 2
    fits = int(0.5 * free_bytes / per_image)
    batch = 1
    while batch * 2 <= min(fits, MAX_GPU_BATCH_SIZE):
        batch *= 2
    return batch


class OnnxBackend:
    """ONNX Runtime on CPU, from a graph exported once per weights sha256 into the cache."""

    def __init__(
        self,
        card: ModelCard,
        model_dir: Path,
        cache_dir: Path,
        batch_size: int = CPU_BATCH_SIZE,
        threads: int | None = None,
    ) -> None:
        self.name = "onnx-cpu"
        self.batch_size = batch_size
        self.path = ensure_onnx(card, model_dir, cache_dir)
        try:
            self.session = _open_session(self.path, threads)
        except Exception:  # a graph ORT cannot read is a corrupt cache entry, not a dead worker
            log.warning("ONNX Runtime cannot load %s; exporting it again", self.path, exc_info=True)
            self.path.unlink(missing_ok=True)
            self.path = ensure_onnx(card, model_dir, cache_dir)
            self.session = _open_session(self.path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(None, {self.input_name: np.ascontiguousarray(pixels(batch))})
        return _sigmoid(logits[:, 0])


def pixels(batch: np.ndarray) -> np.ndarray:
    """The batch, checked to be uint8 pixels: a normalised float batch would be normalised twice."""
    if batch.dtype != np.uint8:
        raise TypeError(f"the network takes uint8 pixels, not {batch.dtype} (worker.preprocess)")
    return batch


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    # exp of a large positive number overflows to inf -> 1/(1+inf) = 0: the right limit.
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def _open_session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle ORT threads would spin for work, taking the cores that decode and encode need:
    # measured on 2 cores, model-only 4.2 -> 7.6 images/s and end to end 3.2 -> 4.8 without.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Memory, measured on the four-way 480 graph over 11 input shapes (batch 2): the arena
    # and memory patterns (ORT's defaults) held 2.2 GB, as they keep a plan and its memory per
    # input shape; without the arena 0.6 GB at rest but every call faults its pages in again
    # (25% slower); without memory patterns 2-4x slower. So both stay on, set here on
    # purpose, and what bounds the memory is elsewhere: few input shapes
    # (preprocess.SHORT_SIDE_BUCKETS) and CPU_BATCH_SIZE passes per call (cpu_batch_size).
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = True
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_cache_path(card: ModelCard, model_dir: Path, cache_dir: Path) -> Path:
    sha256 = card.weights_sha256 or _weights_sha256(model_dir, card)
    flip = {Flips.NONE: "", Flips.HORIZONTAL: "-flip", Flips.BOTH: "-flip4"}[card.test_time_flips]
    temperature = f"-t{card.logit_temperature:.6g}" if card.logit_temperature != 1.0 else ""
    return cache_dir / "onnx" / f"{sha256}-opset{ONNX_OPSET}-u8{flip}{temperature}.onnx"


def _weights_sha256(model_dir: Path, card: ModelCard) -> str:
    return sha256_file(verify_weights(model_dir, card))


def ensure_onnx(card: ModelCard, model_dir: Path, cache_dir: Path) -> Path:
    """The cached ONNX graph for these weights; exported when missing or corrupt."""
    path = onnx_cache_path(card, model_dir, cache_dir)
    if path.exists() and _cached_graph_is_intact(path):
        verify_weights(model_dir, card)  # a tampered checkpoint must fail even with a cached graph
        return path
    if path.exists():
        log.warning("cached ONNX graph %s is corrupt; exporting it again", path)
        path.unlink(missing_ok=True)
    export_onnx(model_dir, card, path)
    return path


def _cached_graph_is_intact(path: Path) -> bool:
    checksum = path.with_suffix(".sha256")
    if not checksum.exists():
        return False
    return checksum.read_text().strip() == sha256_file(path)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter prints its progress and logs every graph pass: keep the worker's log clean."""
    onnx_ir_log = logging.getLogger("onnx_ir")
    level = onnx_ir_log.level
    onnx_ir_log.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        onnx_ir_log.setLevel(level)


def trace_to_onnx(module: Any, input_size: int, path: Path, uint8_input: bool = False) -> None:
    """`module` as an ONNX graph at `path`: dynamic batch, height and width (multiples of 32).
    `uint8_input`: the module takes uint8 pixels (as from for_inference), not a float32 batch."""
    import torch

    example = torch.zeros(1, 3, input_size, input_size, dtype=torch.uint8 if uint8_input else None)
    batch = torch.export.Dim("batch", min=1, max=1024)
    height = torch.export.Dim("height_32", min=1, max=256)
    width = torch.export.Dim("width_32", min=1, max=256)
    with _quiet_exporter():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            opset_version=ONNX_OPSET,
            dynamo=True,
            external_data=False,
            dynamic_shapes={"x": {0: batch, 2: 32 * height, 3: 32 * width}},
        )


def export_onnx(model_dir: Path, card: ModelCard, path: Path) -> None:
    """Export with dynamic batch, height and width (multiples of 32); written atomically.

    The bare network is exported (traced once) and the card's flips, temperature and pixel
    normalisation are added to its graph (worker.onnx_graph): exporting the flip-averaged module
    traced the network once per flipped copy, 4x the time for a four-way average."""
    import onnx

    from worker.onnx_graph import with_flips_and_temperature, with_pixel_input
    from worker.preprocess import normalisation

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".export-", suffix=".onnx")
    os.close(fd)
    try:
        log.info("exporting %s to ONNX at %s", card.name, path)
        trace_to_onnx(load_network(model_dir, card), card.input_size, Path(temporary))
        graph = with_flips_and_temperature(
            onnx.load(temporary), _flip_dims(card), card.logit_temperature
        )
        graph = with_pixel_input(graph, *normalisation(card.mean, card.std))
        onnx.save(graph, temporary)
        Path(temporary).with_suffix(".sha256").write_text(sha256_file(Path(temporary)) + "\n")
        # The checksum goes in first: a graph is only ever visible with its checksum beside it.
        os.replace(Path(temporary).with_suffix(".sha256"), path.with_suffix(".sha256"))
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
        Path(temporary).with_suffix(".sha256").unlink(missing_ok=True)


def _flip_dims(card: ModelCard) -> list[tuple[int, ...]]:
    from worker.flip import flip_dims

    if card.test_time_flips == Flips.NONE:
        return []
    return flip_dims(vertical=card.test_time_flips == Flips.BOTH)
