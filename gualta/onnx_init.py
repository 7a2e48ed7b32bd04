"""Start training from an ONNX model's weights: fine-tune the shipped model (`--init models/guAlta.onnx`).

The ONNX export folds each convolution's batch norm into the convolution (weight scaled, bias added), so the file
holds no batch-norm statistics for the body. Loading it back into a learner of the same architecture:

  1. the convolutions, head batch norms and linear layers take the file's weights, matched in the order the network
     runs them (shapes checked); each folded batch norm becomes "add the folded bias", so the network computes
     exactly what the file computes;
  2. a few training batches then give each convolution's output mean and variance, and its batch norm is rewritten
     to normalise by them and scale back: the same function, now with the statistics batch-norm training expects
     (without them the first training batch would renormalise every layer and undo the model);
  3. the rebuilt network's scores are checked against ONNX Runtime's on one batch.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gualta.export import learner_normalize, props_of, read_onnx

log = logging.getLogger(__name__)

CALIBRATION_BATCHES = 8          # training batches whose statistics the unfolded batch norms take
PARITY_TOLERANCE = 1e-3          # largest difference of p(class) between the rebuilt network and ONNX Runtime
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "ConvInteger",
                 "MatMulInteger", "QLinearMatMul"}      # what an int8 (quantized) graph computes with


class OnnxInitError(ValueError):
    """The ONNX model cannot initialise this learner (another architecture, classes or input normalisation)."""


def initializer_arrays(proto) -> dict[str, np.ndarray]:
    """The graph's weights as float32 arrays by name, also under the names a Cast (float16 storage) or an Identity
    (the exporter's shared copy of equal weights) gives them."""
    from onnx import numpy_helper

    arrays = {weight.name: numpy_helper.to_array(weight) for weight in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type in ("Cast", "Identity") and node.input[0] in arrays:
            arrays[node.output[0]] = arrays[node.input[0]]
    return {name: values.astype(np.float32) for name, values in arrays.items() if values.dtype.kind == "f"}


LAYER_KINDS = (nn.Conv2d, nn.BatchNorm2d, nn.BatchNorm1d, nn.Linear)


def execution_order(model: nn.Module, batch: torch.Tensor) -> dict[type, list[nn.Module]]:
    """The model's convolutions, batch norms and linear layers, by kind, in the order one forward pass runs them."""
    seen: dict[type, list[nn.Module]] = {kind: [] for kind in LAYER_KINDS}
    hooks = [m.register_forward_hook(lambda m, i, o: seen[type(m)].append(m))
             for m in model.modules() if type(m) in seen]
    try:
        with torch.no_grad():
            model.eval()(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def matched(torch_layers: list[nn.Module], onnx_nodes: list, what: str) -> list[tuple[nn.Module, object]]:
    if len(torch_layers) != len(onnx_nodes):
        raise OnnxInitError(f"the ONNX model has {len(onnx_nodes)} {what}, this network {len(torch_layers)}")
    return list(zip(torch_layers, onnx_nodes))


def weight(arrays: dict[str, np.ndarray], node, position: int) -> np.ndarray:
    """The stored weight a node takes at input `position` (a graph not written by gualta.export may compute it)."""
    if node.input[position] not in arrays:
        raise OnnxInitError(f"{node.name}: input {node.input[position]!r} is not a stored weight")
    return arrays[node.input[position]]


def assign(parameter: torch.Tensor, values: np.ndarray, where: str) -> None:
    if tuple(parameter.shape) != values.shape:
        raise OnnxInitError(f"{where}: the ONNX model has shape {values.shape}, this network {tuple(parameter.shape)}")
    with torch.no_grad():
        parameter.copy_(torch.from_numpy(values))


def load_convolutions(pairs, arrays, batch_norms: list[nn.BatchNorm2d]) -> None:
    """Each convolution takes the folded weight; its batch norm (run right after it) adds the folded bias."""
    if len(batch_norms) != len(pairs):
        raise OnnxInitError(f"{len(pairs)} convolutions but {len(batch_norms)} batch norms: not a ResNet-style body")
    for (conv, node), norm in zip(pairs, batch_norms):
        assign(conv.weight, weight(arrays, node, 1), node.name)
        bias = weight(arrays, node, 2) if len(node.input) > 2 else np.zeros(conv.out_channels, np.float32)
        assign(norm.bias, bias, node.name)
        with torch.no_grad():
            norm.weight.fill_(1.0)
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)       # (x − 0) / √(var + eps) · 1 + bias = x + bias


def load_head(norms: list[nn.BatchNorm1d], linears: list[nn.Linear], proto, arrays) -> None:
    """The head's batch norms (kept unfolded in the file) and linear layers (MatMul: transposed; Gemm)."""
    for norm, node in matched(norms, [n for n in proto.graph.node if n.op_type == "BatchNormalization"],
                              "unfolded batch norms"):
        for position, parameter in enumerate((norm.weight, norm.bias, norm.running_mean, norm.running_var), 1):
            assign(parameter, weight(arrays, node, position), node.name)
        norm.eps = next((a.f for a in node.attribute if a.name == "epsilon"), norm.eps)
    for linear, node in matched(linears, [n for n in proto.graph.node if n.op_type in ("MatMul", "Gemm")],
                                "linear layers"):
        values = weight(arrays, node, 1)
        transposed = node.op_type == "MatMul" or not any(a.name == "transB" and a.i for a in node.attribute)
        assign(linear.weight, values.T.copy() if transposed else values, node.name)
        if (linear.bias is not None) != (len(node.input) > 2):
            raise OnnxInitError(f"{node.name}: the ONNX model's linear layer and this network's differ in bias")
        if linear.bias is not None:
            assign(linear.bias, weight(arrays, node, 2), node.name)


def calibrate_batch_norms(model: nn.Module, pairs, batch_norms, batches: list[torch.Tensor]) -> None:
    """Give each unfolded batch norm its convolution's output statistics, keeping the function: normalise by them,
    scale back by the deviation and add back the mean."""
    sums = {id(conv): [0.0, 0.0, 0] for conv, _ in pairs}

    def collect(conv, inputs, output):
        values = output.detach().double().transpose(0, 1).flatten(1)
        entry = sums[id(conv)]
        entry[0] = entry[0] + values.sum(1)
        entry[1] = entry[1] + (values ** 2).sum(1)
        entry[2] += values.shape[1]

    hooks = [conv.register_forward_hook(collect) for conv, _ in pairs]
    try:
        with torch.no_grad():
            for batch in batches:
                model.eval()(batch)
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        for (conv, _), norm in zip(pairs, batch_norms):
            total, squares, count = sums[id(conv)]
            mean = total / count
            variance = (squares / count - mean ** 2).clamp(min=0)
            scale = (variance + norm.eps).sqrt()
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(variance)
            norm.weight.copy_(scale)                    # (x − mean) / scale · scale + (bias + mean) = x + bias
            norm.bias.add_(mean.to(norm.bias))


def difference_to_file(model: nn.Module, path: Path, batch: torch.Tensor, normalize) -> float:
    """The largest difference of p(class) between the rebuilt network and the file run by the client's ONNX Runtime
    model, on up to 8 inputs of `batch` (resized to the file's input side when this run trains at another)."""
    from gualta.model import OnnxModel

    onnx_model = OnnxModel(path)
    check = batch[:8].float()
    side = onnx_model.info.size
    if check.shape[-1] != side:
        check = nn.functional.interpolate(check, size=(side, side), mode="bilinear", align_corners=False)
    raw = check * normalize.std.to(check.device) + normalize.mean.to(check.device) if normalize is not None else check
    with torch.no_grad():
        ours = torch.softmax(model.eval()(check).float(), 1).cpu().numpy()
    model.train()
    theirs = onnx_model.session.run(None, {onnx_model.input_name: raw.cpu().numpy()})[0]
    return float(np.abs(ours - theirs).max())


def check_float(proto, path: Path) -> None:
    """OnnxInitError for an int8 (quantized) model: its weights are rounded copies, and its graph no fastai one."""
    if "quantized" in props_of(proto) or any(node.op_type in QUANTIZED_OPS for node in proto.graph.node):
        raise OnnxInitError(f"{path} is an int8 (quantized) model: start from the float model it was quantized from "
                            "(a run's model.onnx, models/guAlta.onnx)")


def check_start(path: str | Path, arch: str, normalised: bool) -> None:
    """OnnxInitError for a model a run cannot start from (int8, another arch or normalisation), read before the
    run builds anything: a --pretrained run fetched ImageNet's weights first, to be refused after."""
    path = Path(path)
    proto = read_onnx(path)
    check_float(proto, path)
    check_kind(props_of(proto), path, arch, normalised)


def check_metadata(props: dict, path: Path, arch: str, classes: list[str], normalised: bool) -> None:
    check_kind(props, path, arch, normalised)
    if "classes" in props and json.loads(props["classes"]) != classes:
        raise OnnxInitError(f"{path} has classes {json.loads(props['classes'])}, this dataset {classes}")


def check_kind(props: dict, path: Path, arch: str, normalised: bool) -> None:
    if props.get("arch", arch) != arch:
        raise OnnxInitError(f"{path} is a {props['arch']}, this run trains a {arch}")
    file_normalises = props.get("pretrained") == "true"     # gualta.export puts ImageNet normalisation in the graph
    if "pretrained" in props and file_normalises != normalised:
        wanted = "--pretrained" if file_normalises else "--no-pretrained"
        raise OnnxInitError(f"{path} normalises its input differently from this run; train with {wanted}")


def training_batches(learn, count: int = CALIBRATION_BATCHES) -> list[torch.Tensor]:
    """The first `count` input batches of the learner's training loader (augmented, as training sees them)."""
    device = next(learn.model.parameters()).device
    return [xb.to(device) for _, (xb, *_) in zip(range(count), learn.dls.train)]


def load_onnx_weights(learn, path: str | Path, arch: str, inputs: list[torch.Tensor] | None = None) -> float:
    """Initialise learn.model from an ONNX model exported by gualta.export (same arch, classes and normalisation),
    its batch norms calibrated on `inputs` (default: training batches); returns the largest score difference to
    ONNX Runtime on one batch."""
    path = Path(path)
    proto = read_onnx(path)
    normalize = learner_normalize(learn)
    check_float(proto, path)
    check_metadata(props_of(proto), path, arch, list(learn.dls.vocab), normalize is not None)
    model = learn.model
    inputs = inputs or training_batches(learn)
    arrays, layers = initializer_arrays(proto), execution_order(model, inputs[0])
    pairs = matched(layers[nn.Conv2d], [n for n in proto.graph.node if n.op_type == "Conv"], "convolutions")
    load_convolutions(pairs, arrays, layers[nn.BatchNorm2d])
    load_head(layers[nn.BatchNorm1d], layers[nn.Linear], proto, arrays)
    calibrate_batch_norms(model, pairs, layers[nn.BatchNorm2d], inputs)
    difference = difference_to_file(model, path, inputs[0], normalize)
    if difference > PARITY_TOLERANCE:
        raise OnnxInitError(f"the network rebuilt from {path} scores up to {difference:.3g} away from the file")
    log.info("initialised from %s (%d convolutions; scores within %.1e of ONNX Runtime)", path, len(pairs), difference)
    return difference
