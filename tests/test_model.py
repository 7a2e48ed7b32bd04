"""Loading and scoring models: ONNX/fastai parity on real (simulated) difference images, the .pkl in a fresh
process, the client's import path without fastai, the preprocessing, and publishing to a store."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from gualta.model import ModelInfo, load_model, model_input, preprocess
from gualta.preprocess import difference_image, read_gray, resize_area
from helpers_client import tiny_onnx_model

REPO = Path(__file__).resolve().parents[1]
PARITY = 1e-4


def dataset_images(data: Path, count: int = 24) -> list[np.ndarray]:
    """Difference images of the dataset, test and train, meteors first (varied inputs)."""
    import pandas as pd

    index = pd.read_csv(data / "index.csv").sort_values("meteor", ascending=False)
    return [read_gray(data / fn) for fn in index["fn"].head(count)]


def sharpened_learner(pkl: Path, images: list[np.ndarray]):
    """A fresh copy of the trained learner whose last layer is rescaled so that its meteor logit margin has mean 0
    and deviation 3 over `images`: confident, varied scores make a parity check meaningful."""
    import torch
    from fastai.vision.all import load_learner
    from torch import nn

    from gualta.export import inference_network

    learn = load_learner(pkl)
    with torch.no_grad():
        logits = inference_network(learn)[:-1](torch.from_numpy(preprocess(images, 64)))
        margin = logits[:, 0] - logits[:, 1]
        scale = 3.0 / margin.std().clamp_min(1e-6)
        head = learn.model[1]
        last = nn.Linear(head[-1].in_features, head[-1].out_features)        # fastai's has no bias
        last.weight.copy_(head[-1].weight * scale)
        last.bias.copy_(torch.stack([-scale * margin.mean(), torch.tensor(0.0)]))
        head[-1] = last
    return learn


def test_onnx_import_path_has_no_fastai_or_torch(tiny_run, tiny_dataset):
    image = tiny_dataset[1] / "index.csv"
    code = f"""
import sys, pandas as pd
from pathlib import Path
from gualta.model import load_model
from gualta.preprocess import read_gray
first = pd.read_csv({str(image)!r})["fn"][0]
model = load_model({str(tiny_run.run_dir / "model.onnx")!r})
scores = model.predict([read_gray(Path({str(image.parent)!r}) / first)])
assert scores.shape == (1,) and scores.dtype.name == "float32", scores
heavy = sorted(m for m in ("fastai", "torch", "torchvision") if m in sys.modules)
print("heavy:", heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "heavy: []" in out.stdout


def test_onnx_matches_the_learner_on_real_frames(tiny_run, tiny_dataset, tmp_path):
    from gualta.export import export_onnx
    from gualta.model import FastaiModel

    images = dataset_images(tiny_dataset[1])
    learn = sharpened_learner(tiny_run.run_dir / "model.pkl", images)
    export_onnx(learn, tmp_path / "sharp.onnx")
    torch_scores = FastaiModel(learn).predict(images)
    onnx_scores = load_model(tmp_path / "sharp.onnx").predict(images)
    assert torch_scores.std() > 0.05                                 # the scores really vary
    assert np.abs(onnx_scores - torch_scores).max() < PARITY

    # the check is sharp enough to catch the classic mistake: cv2 INTER_LINEAR instead of PIL bilinear
    onnx = load_model(tmp_path / "sharp.onnx")
    size = onnx.info.size
    wrong = np.stack([np.repeat(cv2.resize(i, (size, size), interpolation=cv2.INTER_LINEAR)[None], 3, 0)
                      for i in images]).astype(np.float32) / 255
    wrong_scores = onnx.session.run(None, {onnx.input_name: wrong})[0][:, 0]
    assert np.abs(wrong_scores - torch_scores).max() > 10 * PARITY


def test_normalize_travels_into_the_onnx_graph(tiny_run, tiny_dataset, tmp_path):
    """A pretrained learner normalises batches with ImageNet stats; the ONNX graph must do the same."""
    from fastai.vision.all import Normalize, imagenet_stats

    from gualta.export import export_onnx
    from gualta.model import FastaiModel

    images = dataset_images(tiny_dataset[1], 12)
    learn = sharpened_learner(tiny_run.run_dir / "model.pkl", images)
    plain = FastaiModel(learn).predict(images)
    learn.dls.add_tfms([Normalize.from_stats(*imagenet_stats)], "after_batch")
    normalized = FastaiModel(learn).predict(images)
    assert np.abs(normalized - plain).max() > 10 * PARITY               # normalisation matters
    export_onnx(learn, tmp_path / "normalized.onnx")
    assert np.abs(load_model(tmp_path / "normalized.onnx").predict(images) - normalized).max() < PARITY


def test_pkl_loads_in_a_fresh_process(tiny_run, tiny_dataset, tmp_path):
    images = dataset_images(tiny_dataset[1], 8)
    np.save(tmp_path / "images.npy", np.stack(images))
    code = f"""
import numpy as np
from gualta.model import load_model
model = load_model({str(tiny_run.run_dir / "model.pkl")!r}, threads=1)
np.save({str(tmp_path / "scores.npy")!r}, model.predict(list(np.load({str(tmp_path / "images.npy")!r}))))
print(model.info)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "arch='resnet18'" in out.stdout and "kind='diff'" in out.stdout
    fresh = np.load(tmp_path / "scores.npy")
    assert np.abs(fresh - load_model(tiny_run.run_dir / "model.onnx").predict(images)).max() < PARITY


def test_onnx_metadata_describes_the_model(tiny_run):
    import onnx

    props = {p.key: p.value for p in onnx.load(str(tiny_run.run_dir / "model.onnx")).metadata_props}
    assert json.loads(props["classes"]) == ["meteor", "no-meteor"]
    assert props["input_size"] == "64" and props["arch"] == "resnet18" and props["input_kind"] == "diff"
    assert "PIL resize to 64x64 BILINEAR" in props["preprocessing"] and props["version"]
    info = load_model(tiny_run.run_dir / "model.onnx").info
    assert (info.classes, info.size, info.arch, info.kind, info.meteor_index) == (
        ["meteor", "no-meteor"], 64, "resnet18", "diff", 0)


def test_batches_of_any_size_agree(tiny_run, tiny_dataset):
    model = load_model(tiny_run.run_dir / "model.onnx", batch_size=4)
    images = dataset_images(tiny_dataset[1], 10)
    together = model.predict(images)
    one_by_one = np.concatenate([model.predict([image]) for image in images])
    assert together.shape == (10,) and np.abs(together - one_by_one).max() < 1e-5
    assert model.predict([]).shape == (0,)


def test_preprocess_is_the_documented_transform():
    gray = np.random.default_rng(0).integers(0, 256, (400, 400), dtype=np.uint8)
    batch = preprocess([gray, gray], 224)
    assert batch.shape == (2, 3, 224, 224) and batch.dtype == np.float32
    assert 0 <= batch.min() and batch.max() <= 1
    assert np.array_equal(batch[0, 0], batch[0, 2])                 # gray repeated on R, G, B
    from PIL import Image
    expected = np.asarray(Image.fromarray(gray).convert("RGB").resize((224, 224), Image.BILINEAR))
    assert np.array_equal(np.round(batch[0].transpose(1, 2, 0) * 255).astype(np.uint8), expected)
    with pytest.raises(ValueError, match="square"):
        preprocess([gray[:300]], 224)


def test_model_input_by_kind():
    rng = np.random.default_rng(1)
    previous = rng.integers(0, 50, (97, 130), dtype=np.uint8)
    current = previous.copy()
    current[40:45, 20:100] = 200
    assert np.array_equal(model_input(current, previous, "diff"), difference_image(current, previous))
    assert np.array_equal(model_input(current, None, "raw"), resize_area(current, 400))
    with pytest.raises(ValueError):
        model_input(current, None, "diff")


def test_load_model_refuses_unknown_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.onnx")
    (tmp_path / "model.h5").write_bytes(b"x")
    with pytest.raises(ValueError, match="format"):
        load_model(tmp_path / "model.h5")
    assert ModelInfo.from_props({}).classes == ["meteor", "no-meteor"]


def test_the_meteor_class_is_found_where_the_model_lists_it():
    """A model listing no-meteor first had its no-meteor probability read as the meteor score."""
    assert ModelInfo.from_props({"classes": '["no-meteor", "meteor"]'}).meteor_index == 1
    assert ModelInfo.from_props({}).meteor_index == 0


def test_publish_versions_and_hashes(tiny_run, tmp_path):
    from gualta.export import publish_model
    from gualta.train import main

    store = tmp_path / "store"
    onnx_path = tiny_run.run_dir / "model.onnx"
    first = publish_model(onnx_path, store)
    models = store / "models"
    assert first["version"] == 1 and (models / "guAlta_v1.onnx").is_file()
    latest = json.loads((models / "guAlta_latest_version.json").read_text())
    assert latest == first
    assert latest["sha256"] == hashlib.sha256((models / "guAlta_latest_version.onnx").read_bytes()).hexdigest()
    assert latest["size"] == (models / "guAlta_latest_version.onnx").stat().st_size
    assert latest["arch"] == "resnet18" and latest["input_size"] == 64
    assert latest["metrics"]["meteor_recall"] is not None or latest["metrics"]["n_meteor"] == 0
    assert load_model(models / "guAlta_latest_version.onnx").info.version == "1"

    assert main(["publish", "--model", str(onnx_path), "--store", str(store)]) == 0
    second = json.loads((models / "guAlta_latest_version.json").read_text())
    assert second["version"] == 2 and second["sha256"] != first["sha256"]      # the version is in the file
    assert publish_model(onnx_path, store, version=7)["version"] == 7
    assert publish_model(onnx_path, store)["version"] == 8
    published = (models / "guAlta_v7.onnx").read_bytes()
    with pytest.raises(ValueError, match="version 7 is already published"):
        publish_model(onnx_path, store, version=7)
    assert (models / "guAlta_v7.onnx").read_bytes() == published
    assert json.loads((models / "guAlta_latest_version.json").read_text())["version"] == 8
    with pytest.raises(ValueError, match="version 5 is below the newest published, 8: versions only go up"):
        publish_model(onnx_path, store, version=5)                    # "latest" would have rolled clients back
    gap = tmp_path / "gap"                                            # 1 and 3 published: 2, just below, too
    assert [publish_model(onnx_path, gap, version=number)["version"] for number in (1, 3)] == [1, 3]
    with pytest.raises(ValueError, match="version 2 is below the newest published, 3"):
        publish_model(onnx_path, gap, version=2)
    assert json.loads((models / "guAlta_latest_version.json").read_text())["version"] == 8
    assert not (models / "guAlta_v5.onnx").exists()
    with pytest.raises(ValueError, match="ONNX"):
        publish_model(tiny_run.run_dir / "model.pkl", store)


def test_publishing_after_old_versions_were_pruned_numbers_from_the_latest(tiny_model, tmp_path):
    """A store whose versioned files were pruned, holding only the latest JSON (v5), got v1 published: clients
    comparing versions took the new model for an older one."""
    from gualta.export import publish_model

    models = tmp_path / "store" / "models"
    models.mkdir(parents=True)
    (models / "guAlta_latest_version.json").write_text(json.dumps({"version": 5, "file": "guAlta_v5.onnx"}))
    assert publish_model(tiny_model, tmp_path / "store")["version"] == 6
    assert (models / "guAlta_v6.onnx").is_file() and not (models / "guAlta_v1.onnx").exists()


def test_an_int8_copy_is_published_without_the_float_networks_figures(tiny_run, tmp_path, caplog):
    """`quantize` into the run folder, then `publish` of the int8 copy: its latest JSON carried the float network's
    test figures (metrics.json beside it, same arch, size and training time), though the copy's scores differ."""
    import onnx

    from gualta.export import QUANTIZED_SUFFIX, props_of, publish_model

    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run, copy_function=shutil.copy2)
    proto = onnx.load(str(run / "model.onnx"))
    props = props_of(proto)
    onnx.helper.set_model_props(proto, {**props, "version": props.get("version", "") + QUANTIZED_SUFFIX,
                                        "quantized": "int8 static (a stand-in for `quantize`'s copy)"})
    onnx.save(proto, str(run / "model_int8.onnx"))
    assert publish_model(run / "model.onnx", tmp_path / "store")["metrics"]["n_test"] > 0     # the float network's
    with caplog.at_level(logging.WARNING, "gualta.export"):
        assert publish_model(run / "model_int8.onnx", tmp_path / "store")["metrics"] == {}
    assert "is the evaluation of the network" in caplog.text and "was quantized from" in caplog.text


def test_publishing_the_latest_model_again_says_so(tmp_path, caplog):
    """The same model.onnx published twice made a second version of the same network without a word. Allowed (a
    rollback publishes an earlier model again: an export of it is not compared with earlier versions, which are not
    downloaded), but publishing the latest network again now says so."""
    from gualta.export import publish_model

    store, models = tmp_path / "store", tmp_path / "store" / "models"
    first, other = tiny_onnx_model(tmp_path / "first.onnx"), tiny_onnx_model(tmp_path / "other.onnx", bias=-10.0)
    assert publish_model(first, store)["version"] == 1 and publish_model(other, store)["version"] == 2
    assert publish_model(first, store)["version"] == 3                         # a rollback
    assert caplog.messages == []
    assert publish_model(first, store, version=7)["version"] == 7
    assert caplog.messages == [f"{first} is the network published as version 3, the latest: publishing it again as "
                               "version 7"]
    caplog.clear()
    assert publish_model(models / "guAlta_v7.onnx", store)["version"] == 8     # a published file itself
    assert caplog.messages == [f"{models / 'guAlta_v7.onnx'} is the network published as version 7, the latest: "
                               "publishing it again as version 8"]


def test_publishing_an_earlier_published_copy_says_it_is_a_rollback(tmp_path, caplog):
    """Publishing guAlta_v1.onnx from the store again, after version 2, rolled every client back without a word: the
    copy's own metadata name its version, so the rollback is said; a network never published is not called one."""
    from gualta.export import publish_model

    caplog.set_level(logging.INFO, logger="gualta.export")
    store, models = tmp_path / "store", tmp_path / "store" / "models"
    first, other = tiny_onnx_model(tmp_path / "first.onnx"), tiny_onnx_model(tmp_path / "other.onnx", bias=-10.0)
    assert publish_model(first, store)["version"] == 1 and publish_model(other, store)["version"] == 2
    assert caplog.messages == []
    assert publish_model(models / "guAlta_v1.onnx", store)["version"] == 3
    assert caplog.messages == [f"{models / 'guAlta_v1.onnx'} is the copy published as version 1 (its metadata say so):"
                               " publishing that network again as version 3, a rollback"]


def test_onnx_threads_sleep_between_batches_and_keep_their_count(tmp_path):
    model = load_model(tiny_onnx_model(tmp_path / "tiny.onnx"), threads=2)
    options = model.session.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_onnx_runs_give_their_memory_back_and_score_the_same(monkeypatch):
    """Each run lets ONNX Runtime's arena give back what it took (it kept its largest batch's memory for the life of
    the process), and after a batch the C heap hands it to the system; the shipped model scores the same as with the
    arena kept, batch after batch of any size."""
    shipped = Path(__file__).resolve().parent.parent / "models" / "guAlta.onnx"
    released, kept = load_model(shipped, batch_size=16), load_model(shipped, batch_size=16, release_arena=False)
    assert released.run_options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
    images = [np.random.default_rng(seed).integers(0, 256, (400, 400), np.uint8) for seed in range(16)]
    given_back = []
    monkeypatch.setattr("gualta.model.give_memory_back", lambda: given_back.append(True))
    for count in (16, 1, 5, 16):
        assert np.array_equal(released.predict(images[:count]), kept.predict(images[:count]))
    assert len(given_back) == 3                             # after each batch, not after a frame alone


def test_the_heap_is_trimmed_on_linux_only(monkeypatch):
    """`ctypes.CDLL(None)` raises TypeError on Windows: every batch run there failed after its first model call."""
    import ctypes

    from gualta import model

    def no_null_library(name, *args, **kwargs):
        raise TypeError("argument of type 'NoneType' is not iterable")      # CPython 3.11's on Windows

    monkeypatch.setattr(ctypes, "CDLL", no_null_library)
    assert model.heap_trimmer("win32") is None and model.heap_trimmer("darwin") is None
    monkeypatch.undo()
    assert (model.heap_trimmer("linux") is not None) == hasattr(ctypes.CDLL(None), "malloc_trim")


def test_quantized_copy_scores_like_the_model_and_says_what_it_is(tiny_run, tiny_dataset, client_night, tmp_path):
    import onnx

    from gualta.export import QUANTIZED_SUFFIX, quantize_onnx

    source = tiny_run.run_dir / "model.onnx"
    out = quantize_onnx(source, client_night, tmp_path / "int8.onnx", pairs=8)
    original, quantized = load_model(source), load_model(out)
    assert out.stat().st_size < source.stat().st_size / 2
    assert quantized.info.version == original.info.version + QUANTIZED_SUFFIX
    assert (quantized.info.size, quantized.info.classes, quantized.info.kind, quantized.info.arch) == (
        original.info.size, original.info.classes, original.info.kind, original.info.arch)
    proto = onnx.load(str(out))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in proto.graph.node}
    assert "calibrated on 8 frame pairs of " + client_night.name in {p.key: p.value for p in proto.metadata_props}[
        "quantized"]
    images = dataset_images(tiny_dataset[1], 16)
    assert np.abs(quantized.predict(images) - original.predict(images)).max() < 0.1


def test_half_stored_copy_is_half_the_file_and_scores_like_the_model(tiny_run, tiny_dataset, tmp_path):
    import onnx
    from onnx import TensorProto, numpy_helper

    from gualta.export import HALF_MIN_VALUES, HALF_NOTE, export_onnx, halve_onnx
    from gualta.train import main

    images = dataset_images(tiny_dataset[1])
    export_onnx(sharpened_learner(tiny_run.run_dir / "model.pkl", images), tmp_path / "sharp.onnx")
    assert main(["halve", "--model", str(tmp_path / "sharp.onnx"), "--out", str(tmp_path / "half.onnx")]) == 0
    original, half = load_model(tmp_path / "sharp.onnx"), load_model(tmp_path / "half.onnx")
    assert (tmp_path / "half.onnx").stat().st_size < 0.55 * (tmp_path / "sharp.onnx").stat().st_size
    assert (half.info.version, half.info.size, half.info.classes, half.info.kind, half.info.arch) == (
        original.info.version, original.info.size, original.info.classes, original.info.kind, original.info.arch)
    proto = onnx.load(str(tmp_path / "half.onnx"))
    large = [w for w in proto.graph.initializer if np.prod(w.dims) >= HALF_MIN_VALUES]
    assert large and all(w.data_type == TensorProto.FLOAT16 for w in large)
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT        # the client feeds float32
    assert {p.key: p.value for p in proto.metadata_props}["weights"] == HALF_NOTE
    scores, half_scores = original.predict(images), half.predict(images)
    assert scores.std() > 0.05                                                            # the scores really vary
    assert 0 < np.abs(half_scores - scores).max() < 0.05                                 # rounded, not lost
    # exactly the float32 network with its weights rounded to float16: stored so, computed in float32
    rounded = onnx.load(str(tmp_path / "sharp.onnx"))
    for weight in rounded.graph.initializer:
        values = numpy_helper.to_array(weight)
        if values.size >= HALF_MIN_VALUES:
            weight.CopyFrom(numpy_helper.from_array(values.astype(np.float16).astype(np.float32), weight.name))
    onnx.save(rounded, str(tmp_path / "rounded.onnx"))
    assert np.abs(load_model(tmp_path / "rounded.onnx").predict(images) - half_scores).max() < 1e-5
    assert halve_onnx(tmp_path / "half.onnx", tmp_path / "again.onnx").stat().st_size == pytest.approx(
        (tmp_path / "half.onnx").stat().st_size, rel=1e-3)                               # nothing left to halve


def test_halving_what_is_not_an_onnx_model_is_a_clear_error(tmp_path, capsys):
    from gualta.train import main

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(SystemExit) as stop:
        main(["halve", "--model", str(broken), "--out", str(tmp_path / "half.onnx")])
    assert stop.value.code == 2 and "is not a readable ONNX model" in capsys.readouterr().err
    assert not (tmp_path / "half.onnx").exists()


def test_two_publishes_at_once_never_replace_each_others_version(tiny_run, tmp_path, monkeypatch):
    """Each publish picks the next number from what it lists; one that listed before the other wrote its file finds
    the number taken when it writes, and stops rather than replace a version clients may hold."""
    from gualta import export

    store = tmp_path / "store"
    export.publish_model(tiny_run.run_dir / "model.onnx", store)
    first = (store / "models" / "guAlta_v1.onnx").read_bytes()
    monkeypatch.setattr(export, "published_versions", lambda models: [])        # listed before v1 was written
    with pytest.raises(ValueError, match="version 1 was published meanwhile"):
        export.publish_model(tiny_run.run_dir / "model.onnx", store)
    assert (store / "models" / "guAlta_v1.onnx").read_bytes() == first


def test_an_evaluation_older_than_the_model_is_not_published_with_it(tiny_run, tmp_path, caplog):
    """A model trained again into its run folder without evaluation leaves the previous model's metrics.json there:
    not this model's figures."""
    from gualta.export import publish_model
    from gualta.train import main

    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.onnx", "metrics.json"):
        (run / name).write_bytes((tiny_run.run_dir / name).read_bytes())
    assert publish_model(run / "model.onnx", tmp_path / "store")["metrics"]["n_test"] > 0   # evaluated after
    os.utime(run / "metrics.json", (0, 0))
    assert publish_model(run / "model.onnx", tmp_path / "store")["metrics"] == {}
    assert "is older than" in caplog.text
    assert main(["publish", "--model", str(run / "model.onnx"), "--store", str(tmp_path / "store"),
                 "--metrics", str(run / "metrics.json")]) == 0                   # named: this model's after all
    latest = json.loads((tmp_path / "store" / "models" / "guAlta_latest_version.json").read_text())
    assert latest["metrics"]["n_test"] > 0

    (run / "model.pkl").write_bytes(b"the network trained")            # evaluate, then export from the .pkl:
    os.utime(run / "model.pkl", (10, 10))                               # the ONNX is newer than metrics.json, the
    os.utime(run / "metrics.json", (20, 20))                            # network it holds is not
    assert publish_model(run / "model.onnx", tmp_path / "store")["metrics"]["n_test"] > 0
    os.utime(run / "model.pkl", (30, 30))                               # trained again after the evaluation
    assert publish_model(run / "model.onnx", tmp_path / "store")["metrics"] == {}


def test_publishing_with_what_is_not_a_metrics_json_is_a_clear_error(tiny_run, tmp_path, capsys):
    """--metrics FILE: a config.json published all-null figures, a JSON list or a bad `model` gave a traceback, a
    file that is no JSON said 'Expecting value' without naming it."""
    from gualta.export import publish_model
    from gualta.train import main

    metrics = json.loads((tiny_run.run_dir / "metrics.json").read_text())
    wrong = {"config.json": (tiny_run.run_dir / "config.json").read_text(), "list.json": "[1, 2]",
             "model.json": json.dumps({**metrics, "model": "resnet18"}), "notes.txt": "not JSON"}
    for name, text in wrong.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(SystemExit):
            main(["publish", "--model", str(tiny_run.run_dir / "model.onnx"), "--store", str(tmp_path / "store"),
                  "--metrics", str(tmp_path / name)])
        error = capsys.readouterr().err
        assert f"{tmp_path / name}" in error and "Traceback" not in error
    assert not (tmp_path / "store" / "models").exists()
    run = tmp_path / "run"                                   # a metrics.json beside the model that is none either
    run.mkdir()
    (run / "model.onnx").write_bytes((tiny_run.run_dir / "model.onnx").read_bytes())
    (run / "metrics.json").write_text("[]")
    with pytest.raises(ValueError, match="metrics.json is not an evaluation's metrics.json"):
        publish_model(run / "model.onnx", tmp_path / "store")


def test_publishing_what_is_not_an_onnx_model_is_a_clear_error_and_writes_nothing(tiny_run, tmp_path, capsys):
    import onnx

    from gualta.train import main

    store = tmp_path / "store"
    corrupt = tmp_path / "half-copied.onnx"
    corrupt.write_bytes((tiny_run.run_dir / "model.onnx").read_bytes()[:5000])
    bare = tmp_path / "bare.onnx"                           # its guAlta metadata stripped: a client would guess
    proto = onnx.load(str(tiny_run.run_dir / "model.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(bare))
    for model, reason in ((tiny_run.run_dir / "model.pkl", "only ONNX models are published"),
                          (corrupt, "is not a readable ONNX model"), (bare, "has no guAlta metadata")):
        with pytest.raises(SystemExit) as stop:
            main(["publish", "--model", str(model), "--store", str(store)])
        assert stop.value.code == 2 and reason in capsys.readouterr().err
        assert not store.exists()


def with_props(model: Path, out: Path, batch: int | None = None, **props) -> Path:
    """A copy of an ONNX model with some metadata changed (and its input's batch size fixed, if given)."""
    import onnx

    proto = onnx.load(str(model))
    for prop in proto.metadata_props:
        prop.value = props.get(prop.key, prop.value)
    if batch:
        proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = batch
    onnx.save(proto, str(out))
    return out


def test_a_model_clients_could_not_use_is_refused_before_anything_is_published(tiny_run, tmp_path, capsys):
    """Metadata that did not read stopped the publish only after it had written guAlta_v2.onnx and the latest copy
    (a number lost for good, the latest copy not the latest JSON's); an unknown input kind was published and scored
    on raw frames; a batch size fixed at one was published and installed by clients, whose every night then stopped;
    a thesis version v1–v3 model (224 px images), which every client refuses to load, is refused here too."""
    from gualta.train import main

    model, store = tiny_run.run_dir / "model.onnx", tmp_path / "store"
    main(["publish", "--model", str(model), "--store", str(store)])
    before = {path.name: path.read_bytes() for path in (store / "models").iterdir()}
    for name, reason, options in (("size", "metadata do not read: invalid literal", {"input_size": "400px"}),
                                  ("kind", "unknown input_kind 'difference'", {"input_kind": "difference"}),
                                  ("classes", "name no 'meteor'", {"classes": '["bolide", "other"]'}),
                                  ("single", "cannot score a batch", {"batch": 1}),
                                  ("thesis", "learnt from 224 px images", {"image_size": "224"})):
        odd = with_props(model, tmp_path / f"{name}.onnx", **options)
        with pytest.raises(SystemExit) as stop:
            main(["publish", "--model", str(odd), "--store", str(store)])
        assert stop.value.code == 2 and reason in capsys.readouterr().err
        assert {path.name: path.read_bytes() for path in (store / "models").iterdir()} == before
    with pytest.raises(SystemExit):
        main(["publish", "--model", str(model), "--store", str(store), "--version", "1234567890"])
    assert "at most 9 digits" in capsys.readouterr().err
    assert {path.name for path in (store / "models").iterdir()} == set(before)


def test_quantize_without_frames_to_calibrate_on_is_a_clear_error(tiny_run, tmp_path, capsys):
    from gualta.train import main

    empty = tmp_path / "20211110"
    empty.mkdir()
    with pytest.raises(SystemExit) as stop:
        main(["quantize", "--model", str(tiny_run.run_dir / "model.onnx"), "--night", str(empty),
              "--out", str(tmp_path / "int8.onnx")])
    assert stop.value.code == 2 and "no usable frame pairs to calibrate on" in capsys.readouterr().err
    assert not (tmp_path / "int8.onnx").exists()


def test_onnx_runtime_keeps_no_usage_events(tiny_model, monkeypatch):
    """ONNX Runtime records usage events (a database under ~/.cache/Microsoft on Linux, ETW on Windows) unless told
    not to: turned off before the client's model loads."""
    import onnxruntime

    from gualta.model import OnnxModel

    turned_off = []
    monkeypatch.setattr(onnxruntime, "disable_telemetry_events", lambda: turned_off.append(True))
    OnnxModel(tiny_model)
    assert turned_off
