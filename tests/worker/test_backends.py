"""Both backends from one checkpoint agree; the ONNX cache is keyed, reused and self-healing."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from jewelcut.modelcard import WEIGHTS_FILE, ChecksumMismatch, Flips, ModelCard
from worker import backends
from worker.backends import OnnxBackend, make_backend, onnx_cache_path
from worker.model import load_network
from worker.pipeline import Segmenter
from worker.preprocess import normalisation

# fp32 in both; ORT fuses and reorders kernels, so sums differ in the last bits. Measured on
# this checkpoint: about 1e-6. A real disagreement (wrong normalisation, layout, weights) is >0.1.
MAX_PROBABILITY_DIFFERENCE = 1e-4


def pixel_batch(seed: int, shape: tuple[int, ...] = (2, 3, 64, 96)) -> np.ndarray:
    """Random uint8 pixels (N, 3, H, W): what the backends take."""
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def normalised(batch: np.ndarray, card: ModelCard) -> np.ndarray:
    """The batch as the bare network takes it: normalised float32, done here by hand."""
    scale, offset = normalisation(card.mean, card.std)
    return (batch * scale[:, None, None] + offset[:, None, None]).astype(np.float32)


def test_onnx_and_torch_agree(
    onnx_segmenter: Segmenter, torch_segmenter: Segmenter, listing_photo: Callable[[int], bytes]
) -> None:
    prepared = [
        onnx_segmenter.preprocess(onnx_segmenter.decode(listing_photo(s))) for s in range(3)
    ]
    batch = np.stack([item.tensor for item in prepared])
    onnx_probabilities = onnx_segmenter.backend.predict(batch)
    torch_probabilities = torch_segmenter.backend.predict(batch)
    assert onnx_probabilities.shape == torch_probabilities.shape == (3, *prepared[0].padded_shape)
    difference = np.abs(onnx_probabilities - torch_probabilities).max()
    assert difference <= MAX_PROBABILITY_DIFFERENCE
    onnx_result = onnx_segmenter.finish(
        onnx_probabilities[0][: prepared[0].height, : prepared[0].width]
    )
    torch_result = torch_segmenter.finish(
        torch_probabilities[0][: prepared[0].height, : prepared[0].width]
    )
    assert onnx_result.gate.decision == torch_result.gate.decision


def test_onnx_handles_any_batch_and_shape(onnx_segmenter: Segmenter) -> None:
    for seed, shape in enumerate([(1, 3, 64, 96), (5, 3, 128, 32)]):
        probabilities = onnx_segmenter.backend.predict(pixel_batch(seed, shape))
        assert probabilities.shape == (shape[0], shape[2], shape[3])
        assert probabilities.dtype == np.float32
        assert probabilities.min() >= 0.0 and probabilities.max() <= 1.0


def test_a_normalised_float_batch_is_refused(
    onnx_segmenter: Segmenter, torch_segmenter: Segmenter
) -> None:
    """The network normalises its pixels itself: a float batch would be normalised twice."""
    floats = normalised(pixel_batch(3), onnx_segmenter.card)
    for segmenter in (onnx_segmenter, torch_segmenter):
        with pytest.raises(TypeError, match="uint8 pixels"):
            segmenter.backend.predict(floats)


def test_cached_graph_is_reused(
    onnx_segmenter: Segmenter,
    model_dir: Path,
    model_cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_export(*_args: object) -> None:
        raise AssertionError("the cached graph should have been used")

    monkeypatch.setattr(backends, "export_onnx", no_export)
    backend = OnnxBackend(ModelCard.read(model_dir), model_dir, model_cache_dir, threads=1)
    card = ModelCard.read(model_dir)
    assert backend.path == onnx_cache_path(card, model_dir, model_cache_dir)
    assert card.weights_sha256 in backend.path.name


def test_corrupt_cached_graph_is_deleted_and_exported_again(
    onnx_segmenter: Segmenter, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    card = ModelCard.read(model_dir)
    good_graph = onnx_segmenter.backend.path  # type: ignore[attr-defined]
    cache = tmp_path / "cache"
    cached = onnx_cache_path(card, model_dir, cache)
    cached.parent.mkdir(parents=True)
    shutil.copy(good_graph, cached)
    shutil.copy(good_graph.with_suffix(".sha256"), cached.with_suffix(".sha256"))
    with cached.open("r+b") as graph:  # a disk error or a killed writer
        graph.seek(1000)
        graph.write(b"\x00" * 4096)
    exports: list[Path] = []

    def export_copy(_model_dir: Path, _card: ModelCard, path: Path) -> None:
        """Stands in for the real export (tens of seconds on this CPU) with its result."""
        exports.append(path)
        assert not path.exists()  # the corrupt file was deleted first
        shutil.copy(good_graph, path)
        shutil.copy(good_graph.with_suffix(".sha256"), path.with_suffix(".sha256"))

    monkeypatch.setattr(backends, "export_onnx", export_copy)
    backend = OnnxBackend(card, model_dir, cache, threads=1)
    assert exports == [cached]
    assert backend.predict(np.zeros((1, 3, 64, 64), np.uint8)).shape == (1, 64, 64)


def test_tampered_weights_are_refused_even_with_a_cached_graph(
    onnx_segmenter: Segmenter, model_dir: Path, model_cache_dir: Path, tmp_path: Path
) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(model_dir, tampered)
    with (tampered / WEIGHTS_FILE).open("r+b") as weights:
        weights.seek(-16, 2)
        weights.write(b"\x01" * 16)
    with pytest.raises(ChecksumMismatch):
        make_backend(ModelCard.read(tampered), tampered, "cpu", "onnx", model_cache_dir)
    with pytest.raises(ChecksumMismatch):
        make_backend(ModelCard.read(tampered), tampered, "cpu", "torch")


def test_auto_picks_onnx_on_cpu(
    onnx_segmenter: Segmenter, model_dir: Path, model_cache_dir: Path
) -> None:
    card = ModelCard.read(model_dir)
    backend = make_backend(card, model_dir, "auto", "auto", model_cache_dir)
    assert backend.name == "onnx-cpu"
    # CPU_BATCH_SIZE network passes per call: the photos times their flips
    assert backend.batch_size == max(1, backends.CPU_BATCH_SIZE // backends.network_passes(card))
    with pytest.raises(ValueError, match="CPU"):
        make_backend(ModelCard.read(model_dir), model_dir, "cuda", "onnx", model_cache_dir)


def version_with(model_dir: Path, tmp_path: Path, **card_fields: object) -> Path:
    """The same weights under a card that runs them otherwise (flip, temperature)."""
    directory = tmp_path / "-".join(f"{key}-{value}" for key, value in card_fields.items())
    shutil.copytree(model_dir, directory)
    ModelCard.read(directory).model_copy(update=card_fields).write(directory)
    return directory


def assert_plain_runs_otherwise(
    plain: Path, version: Path, batch: np.ndarray, expected: np.ndarray, cache_dir: Path
) -> None:
    """The plain card's output is not `expected` (the test can fail), and the version's ONNX
    graph is cached apart from the plain one's (neither is ever served for the other)."""
    bare = make_backend(ModelCard.read(plain), plain, "cpu", "torch", threads=1)
    assert np.abs(bare.predict(batch) - expected).max() > 10 * MAX_PROBABILITY_DIFFERENCE
    assert onnx_cache_path(ModelCard.read(version), version, cache_dir) != onnx_cache_path(
        ModelCard.read(plain), plain, cache_dir
    )


# The flipped copies each version averages: (dims flipped) per copy.
FLIPPED_COPIES = {Flips.HORIZONTAL: [(-1,)], Flips.BOTH: [(-1,), (-2,), (-2, -1)]}


@pytest.mark.parametrize("flips", [Flips.HORIZONTAL, Flips.BOTH])
def test_flip_averaged_version_is_flip_symmetric_in_both_backends(
    flips: Flips, model_dir: Path, model_cache_dir: Path, tmp_path: Path
) -> None:
    import torch

    plain = version_with(model_dir, tmp_path, test_time_flips=Flips.NONE, logit_temperature=1.0)
    flipped = version_with(model_dir, tmp_path, test_time_flips=flips, logit_temperature=1.0)
    batch = pixel_batch(1)
    network = load_network(plain)
    with torch.inference_mode():
        x = torch.from_numpy(normalised(batch, ModelCard.read(plain)))
        logits = [network(x)] + [network(x.flip(d)).flip(d) for d in FLIPPED_COPIES[flips]]
        expected = torch.sigmoid(sum(logits) / len(logits))[:, 0].numpy()
    card = ModelCard.read(flipped)
    for name in ("torch", "onnx"):
        backend = make_backend(card, flipped, "cpu", name, model_cache_dir, threads=1)
        probabilities = backend.predict(batch)
        assert np.abs(probabilities - expected).max() <= MAX_PROBABILITY_DIFFERENCE, name
        for dims in FLIPPED_COPIES[flips]:
            of_flipped = backend.predict(np.ascontiguousarray(np.flip(batch, dims)))
            symmetric = np.flip(of_flipped, dims)  # negative dims: the same axes in (N, H, W)
            assert np.abs(symmetric - probabilities).max() <= MAX_PROBABILITY_DIFFERENCE, dims
    assert_plain_runs_otherwise(plain, flipped, batch, expected, model_cache_dir)


def test_the_two_flip_averages_are_cached_apart(model_dir: Path, tmp_path: Path) -> None:
    mirrored = version_with(model_dir, tmp_path, test_time_flips=Flips.HORIZONTAL)
    four_way = version_with(model_dir, tmp_path, test_time_flips=Flips.BOTH)
    assert onnx_cache_path(ModelCard.read(mirrored), mirrored, tmp_path) != onnx_cache_path(
        ModelCard.read(four_way), four_way, tmp_path
    )


def test_a_card_written_with_flip_average_reads_as_the_mirror(model_dir: Path) -> None:
    written = ModelCard.read(model_dir).model_dump(mode="json", exclude={"test_time_flips"})
    assert ModelCard.model_validate({**written, "flip_average": True}).test_time_flips == (
        Flips.HORIZONTAL
    )
    assert ModelCard.model_validate({**written, "flip_average": False}).test_time_flips == (
        Flips.NONE
    )


def test_a_tempered_version_divides_its_logits_in_both_backends(
    model_dir: Path, model_cache_dir: Path, tmp_path: Path
) -> None:
    import torch

    plain = version_with(model_dir, tmp_path, test_time_flips=Flips.NONE, logit_temperature=1.0)
    tempered = version_with(model_dir, tmp_path, test_time_flips=Flips.NONE, logit_temperature=1.5)
    batch = pixel_batch(2)
    with torch.inference_mode():
        logits = load_network(plain)(torch.from_numpy(normalised(batch, ModelCard.read(plain))))
    expected = torch.sigmoid(logits / 1.5)[:, 0].numpy()
    card = ModelCard.read(tempered)
    for name in ("torch", "onnx"):
        backend = make_backend(card, tempered, "cpu", name, model_cache_dir, threads=1)
        probabilities = backend.predict(batch)
        assert np.abs(probabilities - expected).max() <= MAX_PROBABILITY_DIFFERENCE, name
        assert ((probabilities >= 0.5) == (logits[:, 0].numpy() >= 0)).all(), "same mask"
    assert_plain_runs_otherwise(plain, tempered, batch, expected, model_cache_dir)


@pytest.mark.parametrize("vertical", [False, True], ids=["mirror", "four-way"])
def test_flips_in_one_batch_give_the_same_logits(vertical: bool, model_dir: Path) -> None:
    """The GPU runs the photo and its flips as one batch; the result is the passes' own."""
    import torch

    from worker.flip import FlipAveraged

    network = load_network(model_dir)
    batch = torch.from_numpy(np.random.default_rng(2).normal(size=(2, 3, 64, 96)))
    with torch.inference_mode():
        one_after_another = FlipAveraged(network, vertical=vertical)(batch.float())
        as_one_batch = FlipAveraged(network, vertical=vertical, one_batch=True)(batch.float())
    assert torch.allclose(as_one_batch, one_after_another, atol=1e-4)


def test_a_compiled_torch_backend_runs_full_batches_of_one_shape(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.compile with fixed shapes: a short batch is padded to the batch size (one graph per
    input shape) and only its own rows come back. torch.compile itself is stood in for here:
    inductor takes minutes on this CPU (measured once: 155 s for one shape, then 0.2 s a call,
    probabilities within 1e-7 of eager)."""
    import torch

    compiled: list[dict[str, object]] = []
    seen_batches: list[int] = []

    def fake_compile(network: torch.nn.Module, **options: object) -> Callable[..., object]:
        compiled.append(options)

        def run(batch: torch.Tensor) -> object:
            seen_batches.append(len(batch))
            return network(batch)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    card = ModelCard.read(model_dir)
    eager = make_backend(card, model_dir, "cpu", "torch", batch_size=3, threads=1)
    graphs = make_backend(
        card, model_dir, "cpu", "torch", batch_size=3, threads=1, compile_mode="reduce-overhead"
    )
    assert compiled == [{"mode": "reduce-overhead", "dynamic": False}]
    assert graphs.name == "torch-cpu-compiled"
    short = pixel_batch(5, (1, 3, 64, 96))
    probabilities = graphs.predict(short)
    assert seen_batches == [3], "padded to the batch size"
    assert probabilities.shape == (1, 64, 96)
    assert np.abs(probabilities - eager.predict(short)).max() <= MAX_PROBABILITY_DIFFERENCE
    make_backend(card, model_dir, "cpu", "torch", threads=1, compile_mode="default")
    assert compiled[-1] == {"mode": None, "dynamic": False}, "torch's own default mode"
