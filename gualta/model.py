"""Load a meteor classifier (ONNX or fastai .pkl) and score batches of 400×400 gray model inputs.

The ONNX path imports only numpy, Pillow and onnxruntime (the Raspberry Pi client's path); fastai is imported
lazily, only for a .pkl. Both backends see exactly what training saw:

    400×400 uint8 gray (v4 difference, or the raw frame for an `input_kind` raw model)
    → RGB (gray repeated) → PIL resize to S×S BILINEAR (fastai's Resize; cv2 INTER_LINEAR differs)
    → float32 / 255 → [N, 3, S, S]

An exported ONNX graph takes that tensor and returns class probabilities (ImageNet normalisation, when the model
was pretrained, and the softmax are inside the graph).
"""
from __future__ import annotations

import ctypes
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from gualta.preprocess import TRAIN_SIZE, difference_image, resize_area, to_gray

CLASSES = ("meteor", "no-meteor")
INPUT_KINDS = ("diff", "raw")
PREPROCESSING = ("input: 400x400 uint8 gray (a frame longer than 1630 px first shrunk to 1304 px on that side, "
                 "INTER_AREA: gualta.preprocess.to_reference_scale; diff: gray -> cv2.subtract(current, previous, or "
                 "its local maximum where the camera moved an edge >= 0.3 px, turn included: "
                 "gualta.preprocess.steady_previous) -> >3.5 -> 255 -> INTER_AREA 400x400; raw: gray current frame -> "
                 "INTER_AREA 400x400) -> RGB (gray repeated) -> PIL resize to SxS BILINEAR -> float32 /255 -> NCHW "
                 "[N,3,S,S]; output: class probabilities in `classes` order")
DEFAULT_BATCH = 16


@dataclass
class ModelInfo:
    """What a model expects and returns."""
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    size: int = 224
    arch: str = "unknown"
    kind: str = "diff"
    version: str = ""
    created: str = ""           # ISO-8601 time the network was trained (else exported): a later one is newer
    image_size: int = TRAIN_SIZE    # side of the dataset images it learnt from: 400 is what model_input makes (v4 or
                                    # raw); 224 is a thesis version v1–v3, whose images the client does not make
    train_nights: tuple[str, ...] = ()     # the nights it learnt from (training and validation): not test nights

    @property
    def client_ready(self) -> bool:
        """Whether the client's model input (`model_input`) is what this model learnt from."""
        return self.image_size == TRAIN_SIZE

    @property
    def meteor_index(self) -> int:
        return self.classes.index("meteor")

    @classmethod
    def from_props(cls, props: dict[str, str]) -> "ModelInfo":
        """From ONNX metadata_props (all strings); ValueError where they cannot be what a guAlta model says (the
        client would feed it the wrong image or read the wrong class)."""
        classes, kind = json.loads(props.get("classes", json.dumps(CLASSES))), props.get("input_kind", "diff")
        if not isinstance(classes, list) or "meteor" not in classes:
            raise ValueError(f"its classes {props.get('classes')!r} name no 'meteor'")
        if kind not in INPUT_KINDS:
            raise ValueError(f"unknown input_kind {kind!r}: expected one of {', '.join(INPUT_KINDS)}")
        return cls(classes=[str(name) for name in classes],
                   size=int(props.get("input_size", 224)), arch=props.get("arch", "unknown"),
                   kind=kind, version=props.get("version", ""),
                   created=props.get("created", ""), image_size=int(props.get("image_size", TRAIN_SIZE)),
                   train_nights=tuple(night for night in props.get("train_nights", "").split(",") if night))


def model_input(current: np.ndarray, previous: np.ndarray | None, kind: str = "diff") -> np.ndarray:
    """The 400×400 gray image a model of this input kind scores for a frame (and its predecessor, for diff)."""
    if kind == "raw":
        return resize_area(to_gray(current), TRAIN_SIZE)
    if previous is None:
        raise ValueError("a difference model needs the previous frame")
    return difference_image(current, previous)


def resize_like_fastai(gray: np.ndarray, size: int) -> np.ndarray:
    """size×size uint8 with PIL BILINEAR, as fastai's Resize does on a square image (same per channel as RGB)."""
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 gray image, got {gray.dtype} {gray.shape}")
    if gray.shape[0] != gray.shape[1]:
        raise ValueError(f"expected a square image (400×400), got {gray.shape}")
    return np.asarray(Image.fromarray(gray).resize((size, size), Image.BILINEAR))


def preprocess(images, size: int) -> np.ndarray:
    """Gray uint8 images → float32 [N, 3, size, size] in [0, 1], the network input."""
    resized = np.stack([resize_like_fastai(image, size) for image in images]).astype(np.float32) / 255.0
    return np.repeat(resized[:, None], 3, axis=1)


def batches(items: list, size: int):
    """Consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


class OnnxModel:
    """An exported guAlta ONNX graph run with onnxruntime."""

    def __init__(self, path: str | Path, threads: int = 1, batch_size: int = DEFAULT_BATCH,
                 release_arena: bool = True):
        import onnxruntime as ort

        ort.disable_telemetry_events()          # an observatory's machine keeps no usage events for anyone
        self.path, self.threads, self.batch_size, self.release_arena = Path(path), threads, batch_size, release_arena
        self.run_options = ort.RunOptions()
        if release_arena:
            # Each run gives the memory it took back (ONNX Runtime's arena otherwise keeps its largest batch's for
            # the life of the process: a backlog scored at batch size 16 once cost ~250 MB until the next restart).
            self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.reopen()
        self.input_name = self.session.get_inputs()[0].name
        self.info = ModelInfo.from_props(self.session.get_modelmeta().custom_metadata_map)

    def reopen(self) -> None:
        """Open the session on the model file (again, after `release`)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Idle threads sleep instead of spinning: the client prepares the next batch (decoding, the streak check)
        # on the same cores while the model runs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def release(self) -> None:
        """Let the session and its memory go (a model refresh opens the new one only after); `reopen` takes it
        back."""
        self.session = None

    def probabilities(self, images) -> np.ndarray:
        """Class probabilities [N, len(classes)] for gray uint8 model inputs."""
        images = list(images)
        if not images:
            return np.zeros((0, len(self.info.classes)), np.float32)
        probabilities = np.concatenate([self.session.run(None, {self.input_name: preprocess(chunk, self.info.size)},
                                                         self.run_options)[0]
                                        for chunk in batches(images, self.batch_size)])
        if self.release_arena and len(images) > 1:       # a batch's memory, not the next frame's: to the system
            give_memory_back()
        return probabilities

    def predict(self, images) -> np.ndarray:
        """Meteor probability (float32) for each gray uint8 model input."""
        return self.probabilities(images)[:, self.info.meteor_index].astype(np.float32)


def heap_trimmer(platform: str = sys.platform):
    """glibc's malloc_trim on Linux (None elsewhere, or on a C library without it: musl; Windows has no
    `ctypes.CDLL(None)` at all)."""
    if not platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None


MALLOC_TRIM = heap_trimmer()


def give_memory_back() -> None:
    """Hand the C heap's free memory back to the system (glibc's malloc_trim, a few ms; nothing where there is none):
    glibc otherwise keeps what ONNX Runtime let go of."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


class FastaiModel:
    """A fastai Learner (exported .pkl, or one in memory) scoring through its own test DataLoader."""

    def __init__(self, learner_or_path, threads: int | None = None):
        import torch
        from fastai.learner import load_learner

        if threads:
            torch.set_num_threads(threads)
        if isinstance(learner_or_path, (str, Path)):
            self.path = Path(learner_or_path)
            self.learn = load_learner(self.path, cpu=True)
        else:
            self.path, self.learn = None, learner_or_path
        self.info = learner_info(self.learn)

    def probabilities(self, images) -> np.ndarray:
        """Class probabilities [N, len(classes)] for gray uint8 model inputs."""
        rgb = [Image.fromarray(image).convert("RGB") for image in images]
        if not rgb:
            return np.zeros((0, len(self.info.classes)), np.float32)
        dl = self.learn.dls.test_dl(rgb, num_workers=0)
        with self.learn.no_bar(), self.learn.no_logging():
            probs, _ = self.learn.get_preds(dl=dl)
        return probs.numpy()

    def predict(self, images) -> np.ndarray:
        """Meteor probability (float32) for each gray uint8 model input."""
        return self.probabilities(images)[:, self.info.meteor_index].astype(np.float32)


def learner_info(learn) -> ModelInfo:
    """ModelInfo of a fastai Learner: classes and size from its DataLoaders, the rest from what training stored."""
    from fastai.vision.augment import Resize

    resize = [t for t in learn.dls.after_item.fs if isinstance(t, Resize)]
    size = int(resize[0].size[0]) if resize else 224
    arch = getattr(learn, "arch", None)
    return ModelInfo(classes=[str(c) for c in learn.dls.vocab], size=size,
                     arch=getattr(arch, "__name__", str(arch or "unknown")),
                     kind=getattr(learn, "input_kind", "diff"), version=getattr(learn, "model_version", ""),
                     created=getattr(learn, "created", ""), image_size=getattr(learn, "image_size", TRAIN_SIZE),
                     train_nights=night_names(getattr(learn, "train_nights", ())))


def night_names(nights) -> tuple[str, ...]:
    """The nights named among `nights`, sorted, each once; blanks (NaN, None, '': a dataset image not named
    <night>_<frame id>) are left out."""
    return tuple(sorted({night for night in nights if isinstance(night, str) and night}))


def load_model(path: str | Path, threads: int = 1, batch_size: int = DEFAULT_BATCH,
               release_arena: bool = True) -> OnnxModel | FastaiModel:
    """Open a model file: .onnx with onnxruntime (no fastai import; `release_arena`: each run gives its memory back),
    .pkl with fastai's load_learner."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.suffix.lower() == ".onnx":
        return OnnxModel(path, threads, batch_size, release_arena)
    if path.suffix.lower() == ".pkl":
        return FastaiModel(path, threads)
    raise ValueError(f"unknown model format {path.suffix!r}: expected .onnx or .pkl")


def score_a_blank_batch(model) -> None:
    """Score two blank difference images in one batch, as a night is scored: raises what the model raises where it
    cannot (another input size than its metadata say, a batch size fixed at export)."""
    model.predict([np.zeros((TRAIN_SIZE, TRAIN_SIZE), np.uint8)] * 2)


def scoring_error(exc: Exception) -> str:
    """Why a model could not score an image, in one line: the error's type and its message's first line (an
    onnxruntime error runs on over many)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"
