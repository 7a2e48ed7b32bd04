"""Shared pieces for the inference-client tests: a tiny ONNX "meteor model" built with onnx.helper (no torch)."""
from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from pathlib import Path

TINY_SIZE = 400
TINY_VERSION = "test-1"
LINE = 15                       # the line kernels' length in pixels
DECIDER_START = datetime(2021, 11, 10, 22, 0)


def line_kernels(length: int = LINE):
    """Four normalised line kernels (horizontal, vertical, both diagonals), shape [4, 1, L, L]."""
    import numpy as np

    kernels = np.zeros((4, 1, length, length), np.float32)
    middle = length // 2
    kernels[0, 0, middle, :] = kernels[1, 0, :, middle] = 1
    kernels[2, 0] = np.eye(length)
    kernels[3, 0] = np.fliplr(np.eye(length))
    return kernels / length


def tiny_onnx_model(path: Path, scale: float = 60.0, bias: float = -12.0, size: int = TINY_SIZE,
                    version: str = TINY_VERSION, created: str | None = None) -> Path:
    """A model guAlta's loader accepts: [N,3,S,S] in [0,1] → softmax([meteor, no-meteor]).

    Its meteor logit is scale × (strongest straight bright line of the image) + bias, where the line response is
    the best of four 15-pixel line filters over the pixels above 0.6: streaks score high, speckle low. A stand-in
    for a trained network, enough to drive the client end to end. `created` (ISO-8601) stamps it as an export does.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Slice", ["input", "zero", "one", "one"], ["gray"]),
        helper.make_node("Sub", ["gray", "floor"], ["shifted"]),
        helper.make_node("Relu", ["shifted"], ["bright"]),
        helper.make_node("Conv", ["bright", "kernels"], ["lines"], pads=[LINE // 2] * 4),
        helper.make_node("ReduceMax", ["lines", "axes"], ["peak"], keepdims=0),
        helper.make_node("Mul", ["peak", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "bias"], ["logit"]),
        helper.make_node("Unsqueeze", ["logit", "one"], ["meteor"]),
        helper.make_node("Neg", ["meteor"], ["other"]),
        helper.make_node("Concat", ["meteor", "other"], ["logits"], axis=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    initializers = [helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
                    helper.make_tensor("one", TensorProto.INT64, [1], [1]),
                    helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
                    helper.make_tensor("floor", TensorProto.FLOAT, [], [0.6]),
                    numpy_helper.from_array(line_kernels(), "kernels"),
                    helper.make_tensor("scale", TensorProto.FLOAT, [], [scale / 2]),
                    helper.make_tensor("bias", TensorProto.FLOAT, [], [bias / 2])]
    graph = helper.make_graph(
        nodes, "gualta-tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    helper.set_model_props(model, {"classes": json.dumps(["meteor", "no-meteor"]), "input_size": str(size),
                                   "input_kind": "diff", "arch": "tiny-test", "version": version,
                                   **({"created": created} if created else {})})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def settings(tmp_path: Path, model: Path, **overrides):
    """Client settings for a test: the repository's settings file, no environment, one thread, files in tmp."""
    from gualta.config import load_settings

    values = {"model": model, "outbox": tmp_path / "outbox.sqlite", "threads": 1, "obs_id": "obs01",
              "main_folder": tmp_path / "images", "enable_telegram": False, "batch_size": 8}
    values.update(overrides)
    return load_settings(env={}, overrides=values)


def as_ordinary_user(command: list[str]) -> list[str]:
    """`command` run so that file permissions apply to it: as root, without the capabilities that override them
    (util-linux setpriv), as an observatory's user account runs the client."""
    import os
    import shutil

    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        import pytest

        pytest.skip("running as root without setpriv: permissions cannot be made to apply")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]


def copy_night(night: Path, root: Path) -> Path:
    """A writable copy of a night folder under root."""
    import shutil

    return Path(shutil.copytree(night, root / night.name))


def publish(store: Path, model: Path, version: int = 1, created: str | None = None) -> dict:
    """Put a model into a store's models/ folder as gualta.export.publish_model lays it out (without its imports)."""
    import hashlib
    import shutil

    models = store / "models"
    models.mkdir(parents=True, exist_ok=True)
    name = f"guAlta_v{version}.onnx"
    shutil.copyfile(model, models / name)
    shutil.copyfile(model, models / "guAlta_latest_version.onnx")
    data = (models / name).read_bytes()
    meta = {"version": version, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "file": name,
            **({"created": created} if created else {})}
    (models / "guAlta_latest_version.json").write_text(json.dumps(meta))
    return meta


def frame_result(index: int, score: float, diff=None, **fields):
    """A scored FrameResult for Decider tests: frame `index` of a night every 30 s from 22:00, 1304×976, its 400×400
    difference image `diff` (empty if None); `fields` sets the rest (e.g. `bright`)."""
    import numpy as np

    from gualta import allsky
    from gualta.detect import FrameResult

    name = allsky.frame_name(DECIDER_START + timedelta(seconds=30 * index))
    return FrameResult(Path(name), score=score, diff=np.zeros((400, 400), np.uint8) if diff is None else diff,
                       thumb=np.zeros((224, 224), np.uint8), frame_size=(1304, 976), **fields)


def streak_piece(segment, steady: bool = False, signal: float = 30.0):
    """The streak check's piece of a streak drawn at `segment` of the 400×400 difference image, 2 px wide and
    `signal` × the noise (steady: a satellite's light curve)."""
    import numpy as np

    from gualta.streak import Piece
    from gualta.trails import Trail

    (x1, y1), (x2, y2) = segment
    fx1, fy1, fx2, fy2 = Trail(x1, y1, x2, y2).in_frame(1304, 976)
    length = float(np.hypot(fx2 - fx1, fy2 - fy1))
    return Piece(fx1, fy1, fx2, fy2, (fx1 + fx2) / 2, (fy1 + fy2) / 2, length, round(2 * length), 2.0, signal,
                 steady=steady)


def speckle(seed: int):
    """A 400×400 v4-like background: faint random speckle."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return (rng.random((400, 400)) < 0.04).astype(np.uint8) * rng.integers(20, 120, (400, 400)).astype(np.uint8)


def along_line(start: float, length: float, aside: float = 0.0) -> tuple:
    """A segment of a satellite's line (from (40, 60), direction 2:1) in a 400×400 difference image: `start` px
    along it, `length` px long, `aside` px off it."""
    import numpy as np

    direction, normal = np.array([2.0, 1.0]) / np.sqrt(5), np.array([-1.0, 2.0]) / np.sqrt(5)
    ends = [np.array([40.0, 60.0]) + t * direction + aside * normal for t in (start, start + length)]
    return tuple(tuple(int(round(v)) for v in end) for end in ends)


def decide_in_order(results: list, **options) -> list:
    """Every result pushed, in order, through one Decider(0.85, **options); the night then finished."""
    from gualta.detect import Decider

    decider = Decider(0.85, **options)
    decided = []
    for result in results:
        decided += decider.push(result)
    return decided + decider.finish()


def clear_night(root: Path, date: str, frames: int, seed: int, **rates) -> Path:
    """A clear simulated night of `frames` frames from 23:00 at these event rates (the rest: none)."""
    from gualta.simulate import Rates, simulate_night

    rates = Rates(**{"meteor": 0.0, "fireball": 0.0, "satellite": 0.0, "plane": 0.0, "insect": 0.0, **rates})
    return simulate_night(root, date, frames=frames, start="23:00", seed=seed, scenario="clear", rates=rates,
                          workers=2, progress=False)


def blind_detections(tmp_path: Path, night: Path, **overrides) -> list[dict]:
    """The rows a batch run reports when its model scores every frame ≈ 0: what the client's checks find alone."""
    from gualta.detect import run_batch
    from gualta.scores import read_scores

    blind = tiny_onnx_model(tmp_path / "blind.onnx", scale=0.0)
    scores = tmp_path / ("scores-" + "-".join(f"{key}={value}" for key, value in sorted(overrides.items())) + ".csv")
    run_batch(settings(tmp_path, blind, **overrides), night, scores, upload=False, say=lambda line: None,
              progress=False)
    return [row for row in read_scores(scores) if row["detection"] == "1"]


def piece(x1, y1, x2, y2, signal=20.0, width=2.0):
    """A streak-check piece from x1,y1 to x2,y2 (frame pixels) for Decider and streak tests: 2.5 px of area per px of
    length, mean signal `signal` × the noise."""
    import math

    from gualta.streak import Piece

    length = math.dist((x1, y1), (x2, y2)) + 1
    return Piece(x1, y1, x2, y2, (x1 + x2) / 2, (y1 + y2) / 2, length, round(length * 2.5), width, signal)


def explained_away(diff, neighbour_lines, streaks=(), pieces=None):
    """The satellite check's erased difference image (`gualta.trails.explained_mask` erased), None if nothing is."""
    from gualta.trails import erased, explained_mask

    mask = explained_mask(diff, neighbour_lines, streaks, pieces)
    return erased(diff, mask) if mask.any() else None


ONLY_INSTALLED_RUNNER = """
import importlib.abc, os, runpy, sys
BLOCKED = set(os.environ["GUALTA_TEST_BLOCKED"].split(","))
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed here)", name=name)
sys.meta_path.insert(0, NotInstalled())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def distributions_required(requirements: list[str]) -> set[str]:
    """The distributions `pip install` of these requirements brings: them and their dependencies, recursively."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    todo, found = list(requirements), set()
    while todo:
        requirement = Requirement(todo.pop())
        name = canonicalize_name(requirement.name)
        if name in found or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        found.add(name)
        try:
            todo += metadata.requires(name) or []
        except metadata.PackageNotFoundError:       # an optional platform dependency not installed here
            pass
    return found


def base_requirements(pyproject: Path) -> list[str]:
    """What a plain `pip install .` asks for: the project's dependencies without extras."""
    import tomllib

    return tomllib.loads(pyproject.read_text())["project"]["dependencies"]


def only_installed_command(requirements: list[str], script: Path, *args: str) -> tuple[list[str], str]:
    """(command, blocked modules) running `script` in this environment as if only `requirements` were installed
    (and gualta itself): every installed top-level module that none of their distributions provides fails to
    import, with "not installed here" in its message."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    allowed = distributions_required(requirements) | {"gualta"}
    blocked = sorted(module for module, owners in metadata.packages_distributions().items()
                     if not allowed & {canonicalize_name(owner) for owner in owners})
    return [sys.executable, "-c", ONLY_INSTALLED_RUNNER, str(script), *args], ",".join(blocked)


def windows_imwrite(monkeypatch) -> None:
    """cv2.imwrite as on Windows, which cannot open a path with non-ASCII characters: no file, False (this runs on
    Linux, whose OpenCV opens any path)."""
    import cv2

    imwrite = cv2.imwrite
    monkeypatch.setattr(cv2, "imwrite", lambda path, *rest: str(path).isascii() and imwrite(path, *rest))
