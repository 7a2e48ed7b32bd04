"""The notebooks: committed without outputs, identical to what build_notebooks.py writes, and runnable top to bottom
headless (nbclient) on the tiny simulated dataset through their GUALTA_NB_* parameters."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = ("Train_resnet34.ipynb", "Train_resnet18.ipynb", "Inference_example.ipynb")


def execute(name: str, env: dict, monkeypatch, then: str = "") -> nbformat.NotebookNode:
    """Run a notebook in a fresh kernel from the notebooks folder, with env parameters (and the code `then` in a
    last cell); return it with outputs."""
    from nbclient import NotebookClient

    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    if then:
        notebook.cells.append(nbformat.v4.new_code_cell(then))
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return notebook


def printed(notebook: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)


def test_committed_notebooks_are_built_and_clean(tmp_path):
    sys.path.insert(0, str(NOTEBOOKS))
    try:
        import build_notebooks
    finally:
        sys.path.remove(str(NOTEBOOKS))
    build_notebooks.build(tmp_path)
    for name in NAMES:
        committed = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert committed == nbformat.read(tmp_path / name, as_version=4), f"{name}: rerun build_notebooks.py"
        code = [c for c in committed.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name} has outputs"
        assert code[0].source.startswith("# Parameters") and "GUALTA_NB_" in code[0].source


def test_a_training_notebook_fine_tunes_at_its_init_models_size(monkeypatch):
    """Set to fine-tune the shipped model as its README says (no size given), the notebook trained at 224 px where
    the command line trains at the model's own 320: its parameters leave the size to the init model."""
    from gualta import train

    for key in ("GUALTA_NB_SIZE", "GUALTA_NB_INIT"):
        monkeypatch.delenv(key, raising=False)
    parameters = nbformat.read(NOTEBOOKS / "Train_resnet34.ipynb", as_version=4).cells[1].source
    assert parameters.startswith("# Parameters")
    monkeypatch.setenv("GUALTA_NB_INIT", str(REPO / "models" / "guAlta.onnx"))
    values: dict = {}
    exec(parameters, values)                                                         # noqa: S102
    config = train.TrainConfig(dataset=REPO, out=REPO, size=values["SIZE"], init=Path(values["INIT"]))
    assert train.input_size(config) == train.init_size(config.init) == 320
    monkeypatch.setenv("GUALTA_NB_SIZE", "48")
    exec(parameters, values)                                                         # noqa: S102
    assert values["SIZE"] == 48


@pytest.mark.parametrize("arch,lr_find,init", [("resnet18", 1, ""), ("resnet34", 0, REPO / "models" / "guAlta.onnx")])
def test_training_notebook_runs(arch, lr_find, init, tiny_dataset, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    notebook = execute(f"Train_{arch}.ipynb", {
        "GUALTA_NB_DATASET": tiny_dataset[1], "GUALTA_NB_RUN": run_dir, "GUALTA_NB_SIZE": 48,
        "GUALTA_NB_EPOCHS": 1, "GUALTA_NB_BS": 8, "GUALTA_NB_THREADS": 1, "GUALTA_NB_PRETRAINED": 0,
        "GUALTA_NB_LR_FIND": lr_find, "GUALTA_NB_INIT": init},              # resnet34: fine-tunes the shipped model
        monkeypatch)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"]["arch"] == arch and metrics["model"]["size"] == 48
    assert json.loads((run_dir / "config.json").read_text())["config"]["init"] == (str(init) if init else None)
    assert (run_dir / "lr_find.png").is_file() == bool(lr_find)
    assert "max |ONNX − fastai|" in printed(notebook)
    assert "TqdmWarning" not in printed(notebook)             # importing gualta.train must not load tqdm.auto
    images = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4                                   # show_batch, loss curves, confusion, top losses, CAM


def test_inference_notebook_runs(tiny_run, tiny_dataset, monkeypatch):
    night = tiny_dataset[0] / "20211112"
    notebook = execute("Inference_example.ipynb", {
        "GUALTA_NB_MODEL": tiny_run.run_dir / "model.onnx", "GUALTA_NB_NIGHT": night, "GUALTA_NB_THREADS": 1},
        monkeypatch)
    frames = len(list(night.glob("image-*.jpg")))
    assert f"{frames - 1} frames scored" in printed(notebook)           # the first frame has no predecessor


def test_inference_notebook_skips_a_truncated_frame(tmp_path, monkeypatch):
    """The inference notebook stopped with BadFrame on one truncated JPEG in the night, where batch and prepare skip
    it."""
    from helpers_nights import frame_path, make_night

    night = make_night(tmp_path / "nights", "20211110", 6, meteors=(3,))
    frame_path(night, 2).write_bytes(frame_path(night, 2).read_bytes()[:300])
    notebook = execute("Inference_example.ipynb", {
        "GUALTA_NB_MODEL": REPO / "models" / "guAlta.onnx", "GUALTA_NB_NIGHT": night, "GUALTA_NB_THREADS": 1},
        monkeypatch)
    assert "4 frames scored" in printed(notebook)                      # 5 pairs, less the truncated frame's


def test_inference_notebook_shows_meteors_on_its_own_night(tmp_path, monkeypatch):
    """Without a night, the notebook simulates one whose highest scores are meteors (the night it simulated before
    found none: the example showed no detection), and a second run scores the same night without simulating it."""
    env = {"GUALTA_NB_NIGHTS": tmp_path, "GUALTA_NB_THREADS": 1}
    report = 'print("top events:", list(top["event"]))'
    first = execute("Inference_example.ipynb", env, monkeypatch, then=report)
    found = int(printed(first).split("59 frames scored, ")[1].split(" at or above")[0])
    assert found >= 1 and "top events: ['meteor'," in printed(first)
    night_json = tmp_path / "seed25-60-frames" / "20211110" / "night.json"
    written = night_json.stat().st_mtime_ns
    second = execute("Inference_example.ipynb", env, monkeypatch, then=report)
    assert night_json.stat().st_mtime_ns == written and "simulate 20211110" not in printed(second)
    assert f"59 frames scored, {found} at or above" in printed(second)
