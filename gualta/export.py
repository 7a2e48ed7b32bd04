"""Export a trained Learner (fastai .pkl and a self-describing ONNX graph) and publish models to a store.

The ONNX graph is `Sequential(Normalize if the learner normalises, body + head, Softmax)`: its input is always
float32 [N, 3, S, S] RGB in [0, 1] (see gualta.model.preprocess) and its output class probabilities. Its
metadata_props say how to use it: classes (JSON list, output order), input_size, input_kind (diff|raw), arch,
version, preprocessing, created, gualta_version, pretrained, image_size, train_nights.

`quantize_onnx` writes an int8 copy of an ONNX model (static quantization: weights per channel, activations
calibrated on frame pairs of a night through the client's own preprocessing): a quarter of the size and several
times faster on a CPU, its scores close to the original's but not the same (README, "Speed").

`halve_onnx` writes a copy whose weights are stored in float16 and cast back to float32 when ONNX Runtime loads it:
half the file (the download a client makes), the same float32 arithmetic, scores within a few 1e-4 of the
original's. The shipped model is stored so.

Publishing writes the store's models/ folder (a local folder laid out like the S3 bucket):
guAlta_v{N}.onnx, guAlta_latest_version.onnx (a copy of the newest) and guAlta_latest_version.json
({version, sha256, size, arch, ...}); N auto-increments.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gualta.model import PREPROCESSING, ModelInfo, learner_info, load_model, score_a_blank_batch, scoring_error
from gualta.preprocess import TRAIN_SIZE
from gualta.store import Store, open_store, read_json

log = logging.getLogger(__name__)

OPSET = 17
MODELS_FOLDER = "models"
LATEST = "guAlta_latest_version"
MAX_VERSION = 999_999_999       # the store names a published file guAlta_v<at most 9 digits>.onnx (store.MODEL_FILE)
VERSIONED = re.compile(r"^guAlta_v(\d+)\.onnx$")


class Normalize(nn.Module):
    """(x − mean) / std per channel, the ImageNet normalisation a pretrained learner applies on its batches."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.detach().float().reshape(1, -1, 1, 1).cpu())
        self.register_buffer("std", std.detach().float().reshape(1, -1, 1, 1).cpu())

    def forward(self, x):
        return (x - self.mean) / self.std


def gualta_version() -> str:
    try:
        return metadata.version("gualta")
    except metadata.PackageNotFoundError:
        return "unknown"


def learner_normalize(learn) -> Normalize | None:
    """The learner's batch normalisation as a module, or None (a model trained from scratch has none)."""
    from fastai.data.transforms import Normalize as FastaiNormalize

    found = [t for t in learn.dls.after_batch.fs if isinstance(t, FastaiNormalize)]
    return Normalize(found[0].mean, found[0].std) if found else None


def inference_network(learn) -> nn.Sequential:
    """[0, 1] RGB batch → class probabilities: the learner's normalisation, its model and a softmax (CPU copy)."""
    normalize = learner_normalize(learn)
    layers = ([normalize] if normalize is not None else []) + [copy.deepcopy(learn.model).cpu(), nn.Softmax(dim=1)]
    return nn.Sequential(*layers).eval()


def strip_callbacks(learn) -> None:
    """Remove every callback but fastai's defaults, so learn.export pickles nothing of ours."""
    from fastai.callback.core import TrainEvalCallback
    from fastai.callback.progress import ProgressCallback
    from fastai.learner import CastToTensor, Recorder

    keep = (TrainEvalCallback, Recorder, CastToTensor, ProgressCallback)
    learn.remove_cbs([cb for cb in learn.cbs if not isinstance(cb, keep)])


def export_pkl(learn, path: str | Path) -> Path:
    """fastai learn.export to `path` (load_learner reopens it in a fresh process)."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    strip_callbacks(learn)
    learn.export(path)
    return path


def onnx_metadata(learn, version: str | None = None) -> dict[str, str]:
    """metadata_props describing the exported graph."""
    info = learner_info(learn)
    created = datetime.fromisoformat(info.created) if info.created else datetime.now(timezone.utc)   # train's time
    return {"classes": json.dumps(info.classes), "input_size": str(info.size), "input_kind": info.kind,
            "arch": info.arch, "version": version or info.version or created.strftime("%Y%m%d%H%M%S"),
            "preprocessing": PREPROCESSING.replace("SxS", f"{info.size}x{info.size}"),
            "pretrained": str(bool(getattr(learn, "pretrained", False))).lower(),
            "created": created.isoformat(timespec="seconds"), "gualta_version": gualta_version(),
            "image_size": str(info.image_size), "train_nights": ",".join(info.train_nights)}


def export_onnx(learn, path: str | Path, version: str | None = None) -> Path:
    """The learner's network as one self-contained ONNX file (legacy exporter, opset 17, dynamic batch)."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    network = inference_network(learn)
    size = learner_info(learn).size
    partial = path.with_name(path.name + ".part")   # a run cut short leaves no graph without its metadata
    try:
        torch.onnx.export(network, torch.zeros(1, 3, size, size), str(partial), dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["probabilities"],
                          dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}})
        proto = onnx.load(str(partial))
        onnx.helper.set_model_props(proto, onnx_metadata(learn, version))
        onnx.save(proto, str(partial))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def read_onnx(path: str | Path):
    """The ONNX model at `path`; ValueError when the file is not one (truncated, foreign)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(path))
    except DecodeError as exc:
        raise ValueError(f"{path} is not a readable ONNX model ({exc})") from None


def props_of(proto) -> dict[str, str]:
    """An ONNX model's metadata_props as a dict."""
    return {prop.key: prop.value for prop in proto.metadata_props}


# --- quantization ----------------------------------------------------------------------------------------------

QUANTIZED_SUFFIX = "-int8"
CALIBRATION_PAIRS = 64


def calibration_inputs(night: str | Path, kind: str = "diff", pairs: int = CALIBRATION_PAIRS) -> list:
    """Model inputs of up to `pairs` frames spread evenly over a night, prepared as the client prepares them."""
    from gualta import allsky
    from gualta.detect import prepare
    from gualta.frames import NightFrames

    frames = NightFrames(allsky.list_frames(Path(night)))
    count = len(frames.frames)
    picks = sorted({round(i) for i in np.linspace(1, count - 1, pairs)}) if count > 1 else []
    inputs = [prepare(frames, frames.frames[i], kind, streak_check=False)[1] for i in picks]
    return [model_input for model_input in inputs if model_input is not None]


def quantize_onnx(model_path: str | Path, night: str | Path, out: str | Path,
                  pairs: int = CALIBRATION_PAIRS) -> Path:
    """An int8 copy of a guAlta ONNX model (QDQ, weights per channel), its activations calibrated on a night's frame
    pairs; its metadata kept, the version suffixed QUANTIZED_SUFFIX and a `quantized` note added."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from gualta.model import load_model, preprocess

    model = load_model(model_path)
    inputs = calibration_inputs(night, model.info.kind, pairs)
    if not inputs:
        raise ValueError(f"{night}: no usable frame pairs to calibrate on")
    feeds = iter([{model.input_name: preprocess([image], model.info.size)} for image in inputs])

    class Feeds(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    out = Path(out)
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(model_path), str(prepared))
        quantize_static(str(prepared), str(out), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    proto = onnx.load(str(out))
    props = props_of(proto)
    onnx.helper.set_model_props(proto, {**props, "version": props.get("version", "") + QUANTIZED_SUFFIX,
                                        "quantized": f"int8 static (QDQ, weights per channel), activations calibrated "
                                                     f"on {len(inputs)} frame pairs of {Path(night).name}"})
    onnx.save(proto, str(out))
    return out


# --- half-precision storage ------------------------------------------------------------------------------------

HALF_MIN_VALUES = 1024          # float32 weights of at least this many values are stored in float16
HALF_NOTE = "float16 storage, float32 compute"


def halve_onnx(model_path: str | Path, out: str | Path) -> Path:
    """A copy of an ONNX model with each large float32 weight stored in float16 and a Cast back to float32 in front of
    its users (ONNX Runtime folds the casts when it loads the model); metadata kept, a `weights` note added."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = read_onnx(model_path)
    graph = proto.graph
    graph_inputs = {value.name for value in graph.input}
    stored, casts = [], []
    for weight in graph.initializer:
        values = numpy_helper.to_array(weight)
        if values.dtype != np.float32 or values.size < HALF_MIN_VALUES or weight.name in graph_inputs:
            stored.append(weight)
            continue
        half = numpy_helper.from_array(values.astype(np.float16), f"{weight.name}_float16")
        stored.append(half)
        casts.append(helper.make_node("Cast", [half.name], [weight.name], to=TensorProto.FLOAT,
                                      name=f"{weight.name}_to_float32"))
    nodes = casts + list(graph.node)
    del graph.initializer[:], graph.node[:]
    graph.initializer.extend(stored)
    graph.node.extend(nodes)
    onnx.helper.set_model_props(proto, {**props_of(proto), "weights": HALF_NOTE})
    onnx.checker.check_model(proto)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))
    return out


# --- publishing -------------------------------------------------------------------------------------------------

def published_versions(models: Store) -> list[int]:
    """Versions already in a store's models/ (versioned files and the latest JSON)."""
    names = (key.rpartition("/")[2] for key in models.keys(f"{MODELS_FOLDER}/", recursive=False))
    versions = [int(m[1]) for name in names if (m := VERSIONED.match(name))]
    latest = read_json(models, f"{MODELS_FOLDER}/{LATEST}.json")
    if isinstance(latest, dict) and isinstance(latest.get("version"), int):
        versions.append(latest["version"])
    return versions


def metrics_beside(model_path: Path, props: dict) -> dict | None:
    """The summary of the metrics.json beside a model (its ONNX metadata `props`), when it was written after the
    network was trained — after the run's model.pkl (an ONNX exported from it later is the same network), else
    after the model file: an older one is the evaluation of a model trained before into the same folder — and it
    describes this model (another model evaluated into the folder, say the shipped one, is not this one; nor is the
    network an int8 copy was quantized from)."""
    metrics_path = model_path.parent / "metrics.json"
    if not metrics_path.is_file():
        return None
    trained = model_path.with_name("model.pkl") if model_path.with_name("model.pkl").is_file() else model_path
    evaluated = load_metrics(metrics_path).get("model", {})
    differs = [name for name, theirs, ours in (("arch", "arch", "arch"), ("input size", "size", "input_size"),
                                               ("input", "kind", "input_kind"), ("training time", "created", "created"))
               if evaluated.get(theirs) and props.get(ours) and str(evaluated[theirs]) != str(props[ours])]
    if differs:
        log.warning("%s is the evaluation of another model (%s %s): published without metrics (name it with "
                    "--metrics if it is this model's)", metrics_path, " and ".join(differs),
                    "differs" if len(differs) == 1 else "differ")
        return None
    if props.get("quantized") and evaluated.get("version") != props.get("version"):
        log.warning("%s is the evaluation of the network %s was quantized from, whose scores differ: published "
                    "without metrics (evaluate the int8 copy, or name its metrics with --metrics)", metrics_path,
                    model_path)
        return None
    if metrics_path.stat().st_mtime < trained.stat().st_mtime:
        log.warning("%s is older than %s: taken for an earlier model's evaluation, published without metrics "
                    "(name it with --metrics if it is this model's)", metrics_path, trained)
        return None
    return read_metrics(metrics_path)


def load_metrics(path: Path) -> dict:
    """A metrics.json (an evaluation's: `n_test` or `confusion`, a `model` object if any); ValueError naming the file
    where it is none (a config.json published all-null figures, a list or a bad `model` gave a traceback)."""
    try:
        metrics = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read metrics {path}: {exc}") from None
    if not isinstance(metrics, dict) or not {"n_test", "confusion"} & set(metrics):
        raise ValueError(f"{path} is not an evaluation's metrics.json (no n_test or confusion): give the one "
                         "`python -m gualta.train evaluate` or `train` wrote")
    if not isinstance(metrics.get("model", {}), dict):
        raise ValueError(f"{path} is not an evaluation's metrics.json: its model is {metrics['model']!r}, not an "
                         "object")
    return metrics


def read_metrics(path: Path) -> dict:
    """The headline figures of a metrics.json."""
    from gualta.evaluate import metrics_summary

    return metrics_summary(load_metrics(path))


def published_bytes(proto, props: dict[str, str], version: int) -> bytes:
    """The model file published as `version`: the model with `version` = N in its metadata."""
    import onnx

    onnx.helper.set_model_props(proto, {**props, "version": str(version)})
    return proto.SerializeToString()


def same_as_latest(store: Store, proto, props: dict[str, str]) -> int | None:
    """The latest published version if it is this model (its JSON's sha256 is this model's once it carries that
    version: the files differ by their version alone), else None. Earlier versions are not read: each is a whole
    network to download, and publishing one of them again is what a rollback does on purpose."""
    latest = read_json(store, f"{MODELS_FOLDER}/{LATEST}.json")
    if not isinstance(latest, dict) or not isinstance(latest.get("version"), int) or not latest.get("sha256"):
        return None
    same = hashlib.sha256(published_bytes(proto, props, latest["version"])).hexdigest() == latest["sha256"]
    return latest["version"] if same else None


def copy_of_version(props: dict[str, str], published: list[int]) -> int | None:
    """The published version whose copy a model is, by the `version` its metadata carry (a published copy's is its
    number; an export's, the time it was trained), else None."""
    number = props.get("version", "")
    return int(number) if number.isdigit() and int(number) in published else None


def check_publishable(model_path: Path, props: dict[str, str]) -> None:
    """ValueError, before anything is published, for a model clients could not use: metadata that do not read
    (`ModelInfo.from_props`), a thesis version's images, or a network that cannot score a batch of the v4
    difference (a batch size fixed at export)."""
    try:
        info = ModelInfo.from_props(props)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{model_path}'s metadata do not read: {exc}") from None
    if not info.client_ready:
        raise ValueError(f"{model_path} learnt from {info.image_size} px images (a thesis version v1–v3): clients "
                         f"score the v4 difference ({TRAIN_SIZE} px); train on a v4 dataset to publish")
    try:
        score_a_blank_batch(load_model(model_path))
    except Exception as exc:         # onnxruntime's own errors: a fixed batch size, another input size
        raise ValueError(f"{model_path} cannot score a batch of {TRAIN_SIZE} px difference images, as clients do: "
                         f"{scoring_error(exc)}") from None


def publish_model(model_path: str | Path, store_location: str | Path, version: int | None = None,
                  metrics: dict | None = None, s3_endpoint: str | None = None) -> dict:
    """Write an ONNX model into a store's models/ (a folder, or s3://bucket[/prefix]) as version N (default: the
    next one) and make it the latest; the metadata JSON goes last, so a client never reads it before its file.

    The published copy carries `version` = N in its metadata; `metrics` (default: the summary of a metrics.json
    beside the model) go into guAlta_latest_version.json. Returns that JSON's content.
    """
    model_path = Path(model_path)
    if model_path.suffix.lower() != ".onnx":
        raise ValueError(f"only ONNX models are published (the client's format): {model_path}")
    proto = read_onnx(model_path)
    props = props_of(proto)
    if not {"classes", "input_size"} <= set(props):
        raise ValueError(f"{model_path} has no guAlta metadata (classes, input_size): clients would guess its input; "
                         f"publish a model `python -m gualta.train export` wrote")
    check_publishable(model_path, props)
    if version is not None and version > MAX_VERSION:
        raise ValueError(f"version {version} is over {MAX_VERSION:,}: the store names versions with at most 9 digits")
    store = open_store(store_location, s3_endpoint)
    published = published_versions(store)
    if version in published:
        raise ValueError(f"version {version} is already published: a published model is never replaced, "
                         f"publish this one as a new version (default: {max(published) + 1})")
    if version is not None and version < max(published, default=0):
        raise ValueError(f"version {version} is below the newest published, {max(published)}: versions only go up "
                         f"(to roll back, publish the earlier model again as a new version: default "
                         f"{max(published) + 1})")
    version = version or max(published, default=0) + 1
    if metrics is None:
        metrics = metrics_beside(model_path, props)
    if (latest := same_as_latest(store, proto, props)) is not None:
        log.warning("%s is the network published as version %d, the latest: publishing it again as version %d",
                    model_path, latest, version)
    elif (earlier := copy_of_version(props, published)) is not None:
        log.info("%s is the copy published as version %d (its metadata say so): publishing that network again as "
                 "version %d, a rollback", model_path, earlier, version)

    data = published_bytes(proto, props, version)
    versioned = f"guAlta_v{version}.onnx"
    if not store.create(f"{MODELS_FOLDER}/{versioned}", data):       # another publish took the number meanwhile
        raise ValueError(f"version {version} was published meanwhile: publish again for the next version")
    store.put(f"{MODELS_FOLDER}/{LATEST}.onnx", data)
    info = {"version": version, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "file": versioned,
            "arch": props.get("arch"), "input_kind": props.get("input_kind"),
            "input_size": int(props.get("input_size", 0)), "classes": json.loads(props.get("classes", "[]")),
            "created": props.get("created"),
            "published": datetime.now(timezone.utc).isoformat(timespec="seconds"), "metrics": metrics or {}}
    store.put(f"{MODELS_FOLDER}/{LATEST}.json", json.dumps(info, indent=2).encode())
    return info
