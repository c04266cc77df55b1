"""Graph clean-up of an exported ONNX model whose image size is fixed: static padding.

TensorFlow "SAME" padding that a convolution cannot take itself (EfficientNet-Lite's asymmetric
stride-2 padding) is exported as a separate ``Pad``, which onnxruntime's quantiser leaves as a
float op (between a DequantizeLinear and a QuantizeLinear in a quantised model). Padding
computed from the input's shape (older EfficientNet-Lite exports) comes with a small
shape-arithmetic subgraph (``Shape``, ``Gather``, ``Sub``, ``Div``, ``Concat``...) that runs on
every call and that neither ``PadFusion`` nor the quantiser sees through. The exported model's
spatial size is fixed (only the batch is dynamic), so all those pads are constants:
:func:`fold_static_padding` evaluates computed ones, folds zero ``Pad`` into the following
``Conv`` (``Conv`` supports asymmetric pads) and drops the dead arithmetic. Outputs are unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["fold_static_padding"]


def fold_static_padding(model: Path, output: Path) -> Path:
    """Write a copy of ``model`` with constant pads folded into its convolutions.

    Nothing is frozen when the input's image size is dynamic; pads that depend on the batch
    size are left alone (checked by evaluating them at two batch sizes), as are pads that a
    ``Conv`` cannot take (non-zero value, non-spatial, negative).

    Args:
        model: an ONNX model with one float input ``(batch, C, H, W)``, H and W fixed.
        output: where the result goes (may be ``model``).

    Returns:
        ``output``.
    """
    import onnx

    graph_model = onnx.load(str(model))
    _freeze_pads(graph_model)
    _fold_pads_into_convs(graph_model)
    _prune(graph_model)
    onnx.checker.check_model(graph_model)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph_model, str(output))
    return Path(output)


def _constant_names(graph: Any) -> set[str]:
    names = {t.name for t in graph.initializer}
    return names | {o for n in graph.node if n.op_type == "Constant" for o in n.output}


def _constant_values(graph: Any) -> dict[str, np.ndarray]:
    """Initializers and the tensors of ``Constant`` nodes, by name."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        attributes = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and "value" in attributes:
            values[node.output[0]] = numpy_helper.to_array(attributes["value"].t)
    return values


def _freeze_pads(model: Any) -> None:
    """Feed ``Pad`` nodes new initializers in place of computed ``pads``, where constant.

    The computing nodes are left for :func:`_prune` (they may have other consumers).
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    graph = model.graph
    constants = _constant_names(graph)
    targets = sorted({n.input[1] for n in graph.node if n.op_type == "Pad"
                      and len(n.input) > 1 and n.input[1] and n.input[1] not in constants})
    if not targets:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in targets:
        probe.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    if not all(isinstance(d, int) and d > 0 for d in feed.shape[1:]):
        return  # a dynamic image size: the pads really depend on the input
    shape = list(feed.shape)
    values = []
    for batch in (1, 2):
        inputs = np.zeros([batch, *shape[1:]], dtype=np.float32)
        values.append(session.run(targets, {feed.name: inputs}))
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    for name, first, second in zip(targets, *values, strict=True):
        if not np.array_equal(first, second):
            continue
        frozen = f"{name}_frozen"
        while frozen in taken:
            frozen += "_"
        taken.add(frozen)
        graph.initializer.append(numpy_helper.from_array(np.asarray(first, np.int64), frozen))
        for node in graph.node:
            if node.op_type == "Pad" and len(node.input) > 1 and node.input[1] == name:
                node.input[1] = frozen


def _fold_pads_into_convs(model: Any) -> None:
    """Remove zero-valued constant ``Pad`` nodes whose only consumer is a ``Conv``."""
    from onnx import helper

    graph = model.graph
    constants = _constant_values(graph)
    outputs = {o.name for o in graph.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    removed = []
    for pad in graph.node:
        if pad.op_type != "Pad" or pad.output[0] in outputs:
            continue
        users = consumers.get(pad.output[0], [])
        attributes = {a.name: helper.get_attribute_value(a) for a in pad.attribute}
        mode = attributes.get("mode", b"constant")
        pads = constants.get(pad.input[1]) if len(pad.input) > 1 else None
        value = pad.input[2] if len(pad.input) > 2 else ""
        zero_value = not value or (value in constants and not np.any(constants[value]))
        if (len(users) != 1 or users[0].op_type != "Conv" or mode not in (b"constant", "constant")
                or pads is None or not zero_value or len(pad.input) > 3):
            continue
        conv, half = users[0], len(pads) // 2
        conv_attributes = {a.name: a for a in conv.attribute}
        auto_pad = conv_attributes.get("auto_pad")
        if (pads.min() < 0 or pads[:2].any() or pads[half:half + 2].any()
                or (auto_pad is not None and auto_pad.s not in (b"", b"NOTSET"))):
            continue
        spatial = half - 2
        begin, end = list(pads[2:half]), list(pads[half + 2:])
        if "pads" in conv_attributes:
            existing = list(conv_attributes["pads"].ints)
            begin = [int(a + b) for a, b in zip(existing[:spatial], begin, strict=True)]
            end = [int(a + b) for a, b in zip(existing[spatial:], end, strict=True)]
            conv.attribute.remove(conv_attributes["pads"])
        conv.attribute.append(helper.make_attribute("pads", [int(v) for v in begin + end]))
        conv.input[0] = pad.input[0]
        removed.append(pad)
    for pad in removed:
        graph.node.remove(pad)


def _prune(model: Any) -> None:
    """Drop nodes and initializers that no graph output depends on."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
