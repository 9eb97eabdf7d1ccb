"""Test-time flips, the temperature and the normalisation of uint8 pixels, added to the ONNX
graph of the bare network.

Exporting the flip-averaged module itself traces and translates the network once per copy (four
times for a four-way average: most of the minute a first run spent exporting). Instead the bare
network is exported once and its nodes are repeated here, one copy per flipped input, all
reading the same weights; then the same arithmetic as worker.flip.FlipAveraged and
worker.temperature.TemperatureScaled, in the same order: the sum of the copies (each flipped
back), divided by their count, divided by the temperature. In front of it all, as
worker.normalise.Normalised does: the uint8 input cast to float32, times a scale plus an offset
per channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

INT64_MIN = np.iinfo(np.int64).min  # Slice's "to the end" when stepping backwards


def with_flips_and_temperature(
    model: onnx.ModelProto, flip_dims: Sequence[tuple[int, ...]], temperature: float = 1.0
) -> onnx.ModelProto:
    """`model` (one input, one output: the bare network) as the card runs it."""
    if not flip_dims and temperature == 1.0:
        return model
    graph = model.graph
    (image,) = graph.input
    (logits,) = graph.output
    body = list(graph.node)
    if any(attribute.type in _SUBGRAPH_TYPES for node in body for attribute in node.attribute):
        raise ValueError("the network's graph has subgraphs; copying it is not supported")
    nodes: list[onnx.NodeProto] = []
    constants: list[onnx.TensorProto] = []
    copies = []
    for index, dims in enumerate([(), *flip_dims]):
        suffix = f"__copy{index}"
        source = _flip(image.name, dims, f"{image.name}{suffix}", nodes, constants)
        names = {image.name: source}
        for node in body:
            nodes.append(_renamed(node, names, suffix))
        copies.append(_flip(names[logits.name], dims, f"{logits.name}{suffix}", nodes, constants))
    total = copies[0]
    for index, copy in enumerate(copies[1:], start=1):
        nodes.append(helper.make_node("Add", [total, copy], [f"sum__{index}"]))
        total = f"sum__{index}"
    for name, divisor in (("count", float(len(copies))), ("temperature", temperature)):
        if divisor != 1.0:
            constants.append(numpy_helper.from_array(np.array(divisor, np.float32), name))
            nodes.append(helper.make_node("Div", [total, name], [f"{total}_by_{name}"]))
            total = f"{total}_by_{name}"
    nodes.append(helper.make_node("Identity", [total], [logits.name]))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(constants)
    del graph.value_info[:]  # the intermediate names changed; ONNX Runtime infers shapes
    return model


def with_pixel_input(
    model: onnx.ModelProto, scale: np.ndarray, offset: np.ndarray
) -> onnx.ModelProto:
    """`model`, whose one input is a normalised float32 batch (N, 3, H, W), taking uint8 pixels
    under the same name instead: input * scale + offset per channel, in float32."""
    graph = model.graph
    (image,) = graph.input
    normalised = f"{image.name}__normalised"
    for node in graph.node:
        inputs = [normalised if name == image.name else name for name in node.input]
        del node.input[:]
        node.input.extend(inputs)
    constants = [
        numpy_helper.from_array(scale.astype(np.float32).reshape(1, 3, 1, 1), "pixel_scale"),
        numpy_helper.from_array(offset.astype(np.float32).reshape(1, 3, 1, 1), "pixel_offset"),
    ]
    nodes = [
        helper.make_node("Cast", [image.name], [f"{image.name}__float"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Mul", [f"{image.name}__float", "pixel_scale"], [f"{image.name}__scaled"]),
        helper.make_node("Add", [f"{image.name}__scaled", "pixel_offset"], [normalised]),
    ]
    image.type.tensor_type.elem_type = onnx.TensorProto.UINT8
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *body])
    graph.initializer.extend(constants)
    return model


_SUBGRAPH_TYPES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def _renamed(node: onnx.NodeProto, names: dict[str, str], suffix: str) -> onnx.NodeProto:
    """A copy of `node` reading the renamed values and writing suffixed ones (weights, which no
    node writes, keep their names: every copy reads the same)."""
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.name = f"{node.name}{suffix}" if node.name else ""
    del copy.input[:]
    copy.input.extend(names.get(name, name) for name in node.input)
    del copy.output[:]
    for name in node.output:
        names[name] = f"{name}{suffix}" if name else ""
        copy.output.append(names[name])
    return copy


def _flip(
    source: str,
    dims: tuple[int, ...],
    name: str,
    nodes: list[onnx.NodeProto],
    constants: list[onnx.TensorProto],
) -> str:
    """`source` reversed along `dims` (torch.flip), or `source` itself when there are none."""
    if not dims:
        return source
    values = {
        "starts": [-1] * len(dims),
        "ends": [INT64_MIN] * len(dims),
        "axes": list(dims),
        "steps": [-1] * len(dims),
    }
    inputs = [source]
    for key, value in values.items():
        constants.append(numpy_helper.from_array(np.array(value, np.int64), f"{name}_{key}"))
        inputs.append(f"{name}_{key}")
    flipped = f"{name}_flipped"
    nodes.append(helper.make_node("Slice", inputs, [flipped]))
    return flipped
