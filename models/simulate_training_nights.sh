#!/usr/bin/env bash
# Simulated nights behind the shipped model (see models/MODEL_CARD.md). Usage: models/simulate_training_nights.sh ROOT
# Training nights: 110 nights × 144 frames (72 min each; starts rotate 19:00…05:00, skies rotate every 6 nights, dates
# 3 days apart from 2021-08-01 so seasons and moon phases vary), raised event rates so that meteors, fireballs and
# hard negatives are common. Test nights: 4 whole nights (20:00–08:00) at the default rates, one per sky.
# One process per night, PROCS at a time (default: every core); TRAIN_NIGHTS, TRAIN_FRAMES, RATES and FIRST_SEED
# override the training nights' count, length, event rates and seeds (2000 + i; night i's date and sky follow i,
# a day later for another FIRST_SEED); SKIES the skies they rotate through (default "clear cloudy moon mixed", the
# shipped model's; add moonlit-clouds for broken clouds under a bright moon); TEST_NIGHTS=0 skips the test nights.
# Cut short, it goes on from there when run again: whole nights are kept; remove the nights it names cut short.
set -euo pipefail
export root=${1:?usage: $0 ROOT} py=${PYTHON:-.venv/bin/python}
export OPENCV_FOR_THREADS_NUM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1   # one process per core: one thread each
export rates=${RATES:-meteor=0.45,fireball=0.06,satellite=0.05,plane=0.012,insect=0.02}
export frames=${TRAIN_FRAMES:-144} first_seed=${FIRST_SEED:-2000} skies=${SKIES:-clear cloudy moon mixed}
export shift=$(( first_seed == 2000 ? 0 : 1 ))     # other seeds: dates a day after the shipped model's nights
procs=${PROCS:-$(nproc)}
night() { date -d "$1 + $2 days" +%Y%m%d; }        # distinct dates: one folder per night
train_night() {
  local i=$1 starts=(19:00 21:00 23:00 01:00 03:00 05:00) sky=($skies)
  $py dataPreparation.py simulate --out "$root/train" --nights 1 --frames "$frames" --seed $((first_seed + i)) \
      --workers 1 --date "$(night 20210801 $((i * 3 + shift)))" --start "${starts[$((i % 6))]}" \
      --scenario "${sky[$(((i / 6) % ${#sky[@]}))]}" --rates "$rates"
}
test_night() {
  local i=$1 skies=(clear cloudy moon mixed)
  $py dataPreparation.py simulate --out "$root/test" --nights 1 --seed $((9000 + i)) --workers 1 \
      --date "$(night 20211020 $((i * 38 + 3)))" --scenario "${skies[$i]}"
}
export -f night train_night test_night
{ [ "${TEST_NIGHTS:-1}" = 0 ] || for i in 0 1 2 3; do echo "test_night $i"; done
  for i in $(seq 0 $((${TRAIN_NIGHTS:-110} - 1))); do echo "train_night $i"; done
} | xargs -P "$procs" -I{} bash -c '{}'
