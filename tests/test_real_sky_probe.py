"""bench/real_sky_probe.py: streaks drawn into a sky photograph score above empty pairs (tiny line-detector model),
and the streak check finds bright ones and nothing in empty or shifted pairs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers_client import tiny_onnx_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import real_sky_probe  # noqa: E402


def sky_photo(path: Path) -> Path:
    rng = np.random.default_rng(1)
    sky = np.full((400, 600), 20, np.uint8)
    for x, y in rng.integers(0, (600, 400), (300, 2)):
        cv2.circle(sky, (int(x), int(y)), 1, int(rng.integers(60, 250)), -1)
    cv2.imwrite(str(path), sky)
    return path


def test_streaks_score_above_empty_pairs(tmp_path):
    from gualta.model import load_model

    model = load_model(tiny_onnx_model(tmp_path / "tiny.onnx"), threads=1)
    sky = cv2.imread(str(sky_photo(tmp_path / "sky.jpg")), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    table = real_sky_probe.probe(model, sky, 1.0, 2, np.random.default_rng(0))   # quiet camera
    assert set(table) == {(a, n) for a in real_sky_probe.AMPLITUDES_DN for n in real_sky_probe.LENGTHS_PX}
    empty = max(table[0, n] for n in real_sky_probe.LENGTHS_PX)
    bright = min(table[60, n] for n in real_sky_probe.LENGTHS_PX)
    assert empty < 0.5 < bright


def test_cli_prints_a_row_per_frame_and_amplitude(tmp_path):
    model = tiny_onnx_model(tmp_path / "tiny.onnx")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "real_sky_probe.py"), "--frames",
                           str(sky_photo(tmp_path / "sky.jpg")), "--model", str(model), "--repeats", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("sky.jpg")]
    scored, checked = rows[:len(real_sky_probe.AMPLITUDES_DN)], rows[len(real_sky_probe.AMPLITUDES_DN):-1]
    assert len(scored) == len(real_sky_probe.AMPLITUDES_DN) and scored[0].split()[1] == "none"
    assert [row.split()[1] for row in checked] == ["none", "shifted", "+8", "+15", "+30", "+60"]
    assert rows[-1].split()[1] == "0.00" and "own trails:" in rows[-1]      # no white streak gets wingtip lights


def test_the_streak_check_finds_bright_streaks_and_nothing_in_empty_or_shifted_pairs(tmp_path):
    sky = cv2.imread(str(sky_photo(tmp_path / "sky.jpg")), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    table = real_sky_probe.probe_streak_check(sky, 3.0, 3, np.random.default_rng(0))
    lengths = real_sky_probe.STREAK_LENGTHS_PX
    assert all(table["none", n] == 0 and table["shifted", n] == 0 for n in lengths)
    assert np.mean([table[60, n] for n in lengths]) >= 2 / 3


def test_a_photograph_that_cannot_be_read_is_one_line_before_any_work(tmp_path, capsys):
    """A mistyped --frames path ended in a traceback, after the model had been loaded and other frames scored."""
    (tmp_path / "half.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    for missing in (tmp_path / "nowhere.jpg", tmp_path / "half.jpg"):
        with pytest.raises(SystemExit) as stopped:
            real_sky_probe.main(["--frames", str(missing), "--model", str(tmp_path / "no_model.onnx")])
        assert stopped.value.code == 2 and missing.name in capsys.readouterr().err
