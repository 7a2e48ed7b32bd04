"""Write the training and inference notebooks (without outputs) from the cells below: review this file, not JSON.

    python notebooks/build_notebooks.py [--out notebooks]

Every notebook starts with a parameters cell whose values environment variables GUALTA_NB_* override, so a test
(or a researcher) can run it headless on another dataset: e.g.
GUALTA_NB_DATASET=/data/set GUALTA_NB_EPOCHS=1 jupyter execute Train_resnet18.ipynb
"""
from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
          "language_info": {"name": "python"}}


def train_cells(arch: str) -> list:
    return [
        new_markdown_cell(f"""# Train {arch} on the thesis' difference images

The recipe of `gualta.train` (the same as `python -m gualta.train train`): balanced training nights, 20 % validation,
`Resize`, rotations and flips, `vision_learner({arch})`, early stopping on the validation loss; then the report on
the **test nights only** (`gualta.evaluate`) and the export to `.pkl` and ONNX.

Parameters below can be overridden by environment variables `GUALTA_NB_*`. Without a dataset, a small one is
simulated first (a few minutes). To fine-tune the shipped model instead (e.g. on an observatory's own labelled
nights), set `INIT` to `../models/guAlta.onnx` (a ResNet34), with `PRETRAINED = False`, `LR_FIND = False` and a
low `LR` such as 1e-4; leave `SIZE` unset to train at the size it learnt (320 px)."""),
        new_code_cell(f"""# Parameters
import os
from pathlib import Path

DATASET = Path(os.environ.get("GUALTA_NB_DATASET", "../data/dataset"))       # built if missing
NIGHTS = Path(os.environ.get("GUALTA_NB_NIGHTS", "../data/nights"))          # simulated nights for it
RUN_DIR = Path(os.environ.get("GUALTA_NB_RUN", "../runs/{arch}"))
ARCH = os.environ.get("GUALTA_NB_ARCH", "{arch}")
SIZE = int(os.environ.get("GUALTA_NB_SIZE") or 0) or None                     # None: INIT's input side, else 224
EPOCHS = int(os.environ.get("GUALTA_NB_EPOCHS", "35"))
LR = float(os.environ.get("GUALTA_NB_LR", "1e-3"))
BS = int(os.environ.get("GUALTA_NB_BS", "32"))
PRETRAINED = os.environ.get("GUALTA_NB_PRETRAINED", "1") == "1"             # ImageNet weights need internet; offline: 0
THREADS = int(os.environ.get("GUALTA_NB_THREADS", "2"))
BALANCE = os.environ.get("GUALTA_NB_BALANCE", "downsample")
INIT = os.environ.get("GUALTA_NB_INIT", "")                                  # start from this model.pkl or .onnx
LR_FIND = os.environ.get("GUALTA_NB_LR_FIND", "1") == "1"
SIM_NIGHTS = int(os.environ.get("GUALTA_NB_SIM_NIGHTS", "4"))
SIM_FRAMES = int(os.environ.get("GUALTA_NB_SIM_FRAMES", "240"))"""),
        new_code_cell("""from IPython.display import Image, display
import pandas as pd

from gualta import dataset, evaluate, train
from gualta.simulate import simulate_nights"""),
        new_markdown_cell("## Data: train nights for learning, test nights only for the report"),
        new_code_cell("""if not (DATASET / "index.csv").is_file():
    nights = simulate_nights(NIGHTS, nights=SIM_NIGHTS, frames=SIM_FRAMES, start="21:00", seed=0, keep_whole=True)
    dataset.prepare_dataset(nights[:-1], nights[-1:], DATASET, overwrite=True)   # one cut short has no index.csv
index = train.read_index(DATASET)
print(dataset.describe_index(index))
index.groupby(["dataset", "event"]).size().unstack(0)"""),
        new_code_cell("""config = train.TrainConfig(dataset=DATASET, out=RUN_DIR, arch=ARCH, size=SIZE, epochs=EPOCHS, lr=LR,
                           bs=BS, pretrained=PRETRAINED, threads=THREADS, balance=BALANCE,
                           init=Path(INIT) if INIT else None)
RUN_DIR.mkdir(parents=True, exist_ok=True)
learn, rows = train.learner_for(config)
print(rows.groupby(["is_valid", "label"]).size())
learn.dls.show_batch(max_n=6, figsize=(8, 5))"""),
        new_markdown_cell("""## Learning rate

With `LR_FIND`, fastai's `lr_find` plots the loss against the learning rate and training uses its valley suggestion
in place of `LR`; with `LR_FIND = False`, training uses `LR`."""),
        new_code_cell("""if LR_FIND:
    config.lr = train.find_lr(learn, RUN_DIR)
    display(Image(RUN_DIR / "lr_find.png"))
print(f"learning rate {config.lr:.2g}")"""),
        new_markdown_cell("## Training (writes model.pkl, model.onnx, history.csv to the run folder)"),
        new_code_cell("""result = train.train(config)
print(result.summary["training"])
result.history"""),
        new_markdown_cell("## Test nights"),
        new_code_cell("""metrics = evaluate.evaluate(result.learn, DATASET, RUN_DIR)
print(evaluate.format_summary(metrics))
pd.DataFrame(metrics["recall_by_snr"])"""),
        new_code_cell("""pd.DataFrame(metrics["recall_by_event"]).T"""),
        new_code_cell("""for name in ("loss_curves.png", "confusion_matrix.png", "top_losses.png", "cam.png"):
    if (RUN_DIR / name).is_file():
        display(Image(RUN_DIR / name))"""),
        new_markdown_cell("""## Export check: the ONNX file scores like the learner

Publish it with `python -m gualta.train publish --model RUN_DIR/model.onnx --store STORE`."""),
        new_code_cell("""import numpy as np
from gualta.model import FastaiModel, load_model
from gualta.preprocess import read_gray

images = [read_gray(DATASET / fn) for fn in evaluate.test_rows(DATASET)["fn"][:8]]
onnx_model = load_model(RUN_DIR / "model.onnx")
difference = np.abs(onnx_model.predict(images) - FastaiModel(result.learn).predict(images)).max()
print(onnx_model.info, f"max |ONNX − fastai| = {difference:.2e}")
assert difference < 1e-4"""),
    ]


def inference_cells() -> list:
    return [
        new_markdown_cell("""# Score a night with a guAlta model

Load an ONNX (or fastai `.pkl`) model, turn each frame and its predecessor into the model's input (the v4 difference
image, or the frame itself for a raw-frame model), score them and look at the detections. The first frame of a night
has no predecessor and is skipped, and so are bad frames (truncated, blank, repeated: logged), as
`python guAlta.py batch` does for operators.

Without `NIGHT`, a clear 30-minute night with bright meteors is simulated under `NIGHTS` (once: a re-run scores it
again). These are the model's scores alone: satellites, planes and cloud edges can score high too, and the batch run's
checks hold those back (README, "The checks")."""),
        new_code_cell("""# Parameters
import os
from pathlib import Path

MODEL = os.environ.get("GUALTA_NB_MODEL", "../models/guAlta.onnx")    # the shipped model
NIGHT = os.environ.get("GUALTA_NB_NIGHT", "")           # a night folder ROOT/YYYYMMDD; default: simulate one
NIGHTS = Path(os.environ.get("GUALTA_NB_NIGHTS", "../data/example_nights"))   # where that one is simulated
THRESHOLD = float(os.environ.get("GUALTA_NB_THRESHOLD", "0.85"))
THREADS = int(os.environ.get("GUALTA_NB_THREADS", "2"))
SIM_FRAMES = int(os.environ.get("GUALTA_NB_SIM_FRAMES", "60"))"""),
        new_code_cell("""import numpy as np
import pandas as pd
from matplotlib import pyplot as plt

from gualta import allsky
from gualta.frames import NightFrames
from gualta.model import load_model, model_input
from gualta.preprocess import read_frame
from gualta.simulate import Rates, simulate_nights

model = load_model(MODEL, threads=THREADS)
print(MODEL, model.info)
if not NIGHT:       # seed 25: a clear sky; kept whole, so a re-run reuses it (a folder of its own for each length)
    NIGHT = simulate_nights(NIGHTS / f"seed25-{SIM_FRAMES}-frames", frames=SIM_FRAMES, start="22:00", seed=25, first_date="20211110",
                            rates=Rates(meteor=0.1), keep_whole=True)[0]
night = Path(NIGHT)
print("night", night)"""),
        new_code_cell("""frames = NightFrames(allsky.list_frames(night))   # each frame paired with the last good one before it
pairs, inputs = [], []
for frame in frames.frames:
    if (pair := frames.pair(frame)) is not None:
        pairs.append(pair)
        inputs.append(model_input(frames.image(pair.current), frames.image(pair.previous), model.info.kind))
scores = model.predict(inputs)
table = pd.DataFrame({"file": [p.current.name for p in pairs], "score": scores, "input": range(len(pairs))})
table["label"] = np.where(table["score"] >= THRESHOLD, "meteor", "no-meteor")
print(f"{len(table)} frames scored, {(table['label'] == 'meteor').sum()} at or above {THRESHOLD}")
table.sort_values("score", ascending=False).head(10)"""),
        new_markdown_cell("With the simulator's ground truth, compare:"),
        new_code_cell("""truth_file = night / "ground_truth.csv"
if truth_file.is_file():
    truth = pd.read_csv(truth_file)[["file", "label", "event", "peak_snr"]].rename(columns={"label": "truth"})
    table = table.merge(truth, on="file")
    display(pd.crosstab(table["truth"], table["label"]))"""),
        new_markdown_cell("The four highest scores: the frame and the model's input"),
        new_code_cell("""top = table.sort_values("score", ascending=False).head(4)
fig, axes = plt.subplots(len(top), 2, figsize=(8, 4 * len(top)), squeeze=False)
for (ax_frame, ax_input), row in zip(axes, top.itertuples()):
    ax_frame.imshow(read_frame(night / row.file), cmap="gray")
    ax_input.imshow(inputs[row.input], cmap="gray")
    truth = f", truth: {row.event}" if "event" in table else ""
    ax_frame.set_title(f"{row.file}\\nscore {row.score:.3f}{truth}", fontsize=10)
    ax_input.set_title(f"model input ({model.info.kind})")
    ax_frame.axis("off"), ax_input.axis("off")
plt.tight_layout()"""),
    ]


def notebook(cells: list) -> nbformat.NotebookNode:
    return new_notebook(cells=cells, metadata=KERNEL)


NOTEBOOKS = {"Train_resnet34.ipynb": lambda: notebook(train_cells("resnet34")),
             "Train_resnet18.ipynb": lambda: notebook(train_cells("resnet18")),
             "Inference_example.ipynb": lambda: notebook(inference_cells())}


def build(out_dir: Path = HERE) -> list[Path]:
    """Write every notebook into out_dir; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in NOTEBOOKS.items():
        nb = make()
        for i, cell in enumerate(nb.cells):          # stable ids, so rebuilding changes nothing
            cell["id"] = f"{Path(name).stem.lower()}-{i}"
        nbformat.validate(nb)
        nbformat.write(nb, out_dir / name)
        paths.append(out_dir / name)
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    for path in build(parser.parse_args().out):
        print(path)
