#!/usr/bin/env bash
# Simulated nights behind the shipped model (see models/MODEL_CARD.md). Usage: models/simulate_training_nights.sh ROOT
# Training nights: 24 nights × 240 frames (2 h each, starts spread from dusk to dawn), raised event rates so that
# meteors and hard negatives are common. Test nights: 4 whole nights (20:00–08:00) at the default rates, one per sky.
set -euo pipefail
root=${1:?usage: $0 ROOT}
py=${PYTHON:-.venv/bin/python}
starts=(19:00 21:00 23:00 01:00 03:00 05:00)
rates=meteor=0.3,fireball=0.01,satellite=0.05,plane=0.012,insect=0.02
night() { date -d "$1 + $2 days" +%Y%m%d; }        # distinct dates: one folder per night
for i in $(seq 0 23); do
  $py dataPreparation.py simulate --out "$root/train" --nights 1 --frames 240 --seed $((1000 + i)) \
      --date "$(night 20210915 $((i * 7)))" --start "${starts[$((i % 6))]}" --scenario mixed --rates "$rates"
done
scenarios=(clear cloudy moon mixed)
for i in 0 1 2 3; do
  $py dataPreparation.py simulate --out "$root/test" --nights 1 --seed $((9000 + i)) \
      --date "$(night 20211020 $((i * 38 + 3)))" --scenario "${scenarios[$i]}"
done
