#!/usr/bin/env bash
# How models/guAlta.onnx was built (see models/MODEL_CARD.md). Usage: models/build_shipped_model.sh WORKDIR
# Runs on 2 CPU cores in about an hour (simulation ~25 min, training ~45 min, evaluation ~5 min).
set -euo pipefail
work=${1:?usage: $0 WORKDIR}
py=${PYTHON:-.venv/bin/python}

# 1. Simulated nights: 24 training nights (2 h each, raised event rates), 4 whole test nights (default rates).
models/simulate_training_nights.sh "$work/nights"

# 2. Datasets (v4 difference images): every pair of the training nights; every pair of the test nights.
$py - "$work" <<'PY'
import sys
from pathlib import Path
from gualta import dataset
work = Path(sys.argv[1])
for split, out in (("train", "ds_train"), ("test", "ds_test")):
    nights = sorted((work / "nights" / split).iterdir())
    built = dataset.prepare_dataset(nights if split == "train" else [], nights if split == "test" else [],
                                    work / out, version="v4", overwrite=True)
    print(built.summary())
PY

# 3. Train (from scratch: no ImageNet weights offline). Meteors too faint or short to show in a difference image
#    are left out of training only; the test nights keep every meteor.
$py -m gualta.train train --dataset "$work/ds_train" --out "$work/run" --arch resnet18 --size 224 --epochs 24 \
    --lr 3e-3 --no-pretrained --threads 1 --patience 24 --balance downsample --min-snr 3 --min-length 40 \
    --no-evaluate --seed 42

# 4. Evaluate on the test nights only, then ship the ONNX file.
$py -m gualta.train evaluate --model "$work/run/model.onnx" --dataset "$work/ds_test" --out "$work/run/test" --threads 2
cp "$work/run/model.onnx" models/guAlta.onnx
