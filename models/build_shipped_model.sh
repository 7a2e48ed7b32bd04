#!/usr/bin/env bash
# How models/guAlta.onnx was built (see models/MODEL_CARD.md). Usage: models/build_shipped_model.sh WORKDIR
# Made for a CUDA GPU and 16 cores (training-night simulation ~8 min, test nights ~12 min beside it, datasets ~1 min,
# training ~7 min at 224 px, ~10 min at 320, evaluation ~2 min); on CPU only it runs too, but for days: lower
# TRAIN_NIGHTS and EPOCHS there. SIZE (network input side), EPOCHS, LR, BS, RATES, TRAIN_FRAMES and SKIES (training
# nights' event rates, length and skies) and SHORT_MIN_SNR (keep short meteors at least this bright) override the
# shipped recipe.
# To continue training the shipped model on fresh nights instead of starting from scratch: INIT=models/guAlta.onnx
# FIRST_SEED=5000 LR=1e-4 (README "Fine-tuning the shipped model"); TEST_NIGHTS=0 skips the test nights and their
# evaluation (evaluate elsewhere); SHIP_TO writes the model there instead of models/guAlta.onnx.
set -euo pipefail
work=${1:?usage: $0 WORKDIR}
py=${PYTHON:-.venv/bin/python}
procs=${PROCS:-$(nproc)}

# 1. Simulated nights: 110 training nights (72 min each, raised event rates), 4 whole test nights (default rates).
PYTHON=$py PROCS=$procs models/simulate_training_nights.sh "$work/nights"

# 2. Datasets (v4 difference images): every pair of the training nights; every pair of the test nights.
$py - "$work" "$procs" <<'PY'
import sys
from pathlib import Path
from gualta import dataset
work, procs = Path(sys.argv[1]), int(sys.argv[2])
for split, out in (("train", "ds_train"), ("test", "ds_test")):
    if not (work / "nights" / split).is_dir():
        continue
    nights = sorted((work / "nights" / split).iterdir())
    built = dataset.prepare_dataset(nights if split == "train" else [], nights if split == "test" else [],
                                    work / out, version="v4", overwrite=True, workers=procs)
    print(built.summary())
PY

# 3. Train from scratch (no ImageNet weights offline; online, drop --no-pretrained). Meteors too faint or short to
#    show in a difference image are left out of training only; the test nights keep every meteor.
#    Short meteors stay when bright enough to see (SHORT_MIN_SNR).
epochs=${EPOCHS:-40}
loaders=$((procs < 12 ? procs : 12))
$py -m gualta.train train --dataset "$work/ds_train" --out "$work/run" --arch resnet34 --size "${SIZE:-320}" \
    --epochs "$epochs" --lr "${LR:-3e-3}" --bs "${BS:-64}" --no-pretrained --patience "$epochs" --balance downsample \
    --min-snr 3 --min-length 40 --short-min-snr "${SHORT_MIN_SNR:-8}" --no-evaluate --seed 42 --workers "$loaders" \
    --mixed-precision ${INIT:+--init "$INIT"}

# 4. Evaluate on the test nights only, then ship the ONNX file with its weights stored in float16 (half the download,
#    computed in float32: README "Half-precision storage").
[ "${TEST_NIGHTS:-1}" = 0 ] || $py -m gualta.train evaluate --model "$work/run/model.onnx" --dataset "$work/ds_test" \
    --out "$work/run/test" --threads "$procs"
$py -m gualta.train halve --model "$work/run/model.onnx" --out "${SHIP_TO:-models/guAlta.onnx}"
