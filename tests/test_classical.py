"""Classical Canny + Hough detectors on synthetic frames, and bench/compare.py end to end on a tiny simulated night."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from gualta import classical

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (480, 640)                          # height, width
LINE = ((120, 330), (520, 150))             # through the centre, outside the watermark box, ~440 px long
EXPECTED_COLUMNS = ["method", "meteor recall", "faint recall", "fireball recall", "precision", "FP clear",
                    "FP cloudy", "FP satellite", "FP plane", "frames/s"]
CLASSICAL = ["AllSky meteor (Canny 100/200 + Hough)", "indi-allsky (Canny 15/50 + Hough)",
             "thesis diff + Hough (no network)"]


def night_sky(noise_seed: int = 0, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """A dark noisy sky (25 ± 3 DN) with the same 60 stars whatever the noise seed."""
    noise = np.random.default_rng(noise_seed).normal(25, 3, shape)
    stars = np.random.default_rng(7)
    for x, y, peak in zip(stars.integers(0, shape[1], 60), stars.integers(0, shape[0], 60), stars.uniform(40, 200, 60)):
        noise[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] += peak
    return np.clip(noise, 0, 255).astype(np.uint8)


def with_line(image: np.ndarray, line=LINE, value: int = 140, width: int = 3) -> np.ndarray:
    out = image.copy()
    cv2.line(out, line[0], line[1], value, width, cv2.LINE_AA)
    return out


# --- the detectors -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("detect", [classical.allsky_detect, classical.indi_allsky_detect])
def test_single_frame_detectors_fire_on_a_long_line_only(detect):
    sky = night_sky()
    found = detect(with_line(sky))
    assert found.detected
    assert 0 < found.score <= 1
    x1, y1, x2, y2 = found.lines[0]
    length = math.hypot(x2 - x1, y2 - y1)
    assert found.score == pytest.approx(length / math.hypot(*SHAPE))
    direction = math.atan2(LINE[1][1] - LINE[0][1], LINE[1][0] - LINE[0][0])
    assert abs(math.sin(math.atan2(y2 - y1, x2 - x1) - direction)) < 0.05          # along the drawn line

    quiet = detect(sky)
    assert not quiet.detected
    assert quiet.score == 0 and len(quiet.lines) == 0


def test_detection_unpacks_as_detected_score_lines():
    detected, score, lines = classical.allsky_detect(with_line(night_sky()))
    assert detected is True and isinstance(score, float) and lines.shape[1] == 4


def test_allsky_cloud_mask_removes_a_big_bright_blob():
    cloudy = night_sky()
    cv2.rectangle(cloudy, (330, 250), (620, 460), 150, thickness=-1)       # straight-edged: Hough loves it
    unmasked = classical.AllSkyParams(cloud_area=float("inf"))
    assert classical.allsky_detect(cloudy, unmasked).detected
    assert not classical.allsky_detect(cloudy).detected

    closed = classical.close_edges(cv2.Canny(cloudy, 100, 200), 5)
    mask = classical.cloud_mask(closed, classical.AllSkyParams().cloud_area)
    assert mask[355, 475] == 255 and mask[100, 100] == 0

    meteor_beside_cloud = with_line(cloudy, ((40, 420), (300, 160)))
    found = classical.allsky_detect(meteor_beside_cloud)
    assert found.detected
    assert all(max(x1, x2) < 330 for x1, _, x2, _ in found.lines)      # the line, not the cloud's edges


def test_allsky_ignores_the_watermark_box_and_outside_the_sky_mask():
    in_watermark = with_line(night_sky(), ((20, 60), (380, 90)))
    assert classical.allsky_detect(in_watermark, classical.AllSkyParams(watermark=None)).detected
    assert not classical.allsky_detect(in_watermark).detected

    sky_mask = np.zeros(SHAPE, np.uint8)
    sky_mask[:, 600:] = 255                                     # the line is not under the sky
    assert not classical.allsky_detect(with_line(night_sky()), sky_mask=sky_mask).detected


def test_indi_allsky_searches_the_central_circle_only():
    corner_line = with_line(night_sky(), ((0, 470), (200, 470)))       # along the bottom edge, outside the circle
    assert not classical.indi_allsky_detect(corner_line).detected
    assert classical.indi_allsky_detect(corner_line, classical.IndiAllSkyParams(region=3.0)).detected


def test_diff_hough_fires_when_the_line_is_new_not_when_it_stays():
    previous, current = night_sky(noise_seed=1), night_sky(noise_seed=2)
    new_line = classical.diff_hough_detect(with_line(current), previous)
    assert new_line.detected
    x1, y1, x2, y2 = new_line.lines[0]                          # reported in frame pixels
    assert math.hypot(x2 - x1, y2 - y1) > 150

    assert not classical.diff_hough_detect(with_line(current), with_line(previous)).detected
    assert not classical.diff_hough_detect(current, previous).detected


def test_estimate_sky_mask_keeps_the_sky_and_drops_lens_border_and_mast():
    frames = []
    for seed in range(3):
        frame = np.random.default_rng(seed).normal(6, 2, SHAPE)
        disc = np.zeros(SHAPE, np.uint8)
        cv2.circle(disc, (320, 240), 220, 1, -1)
        frame += disc * 35
        cv2.line(frame, (90, 240), (230, 240), 6, 7)           # a dark mast from the horizon inwards
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    mask = classical.estimate_sky_mask(frames)
    assert mask[240, 320] == 255 and mask[100, 320] == 255     # zenith and open sky
    assert mask[5, 5] == 0 and mask[240, 530] == 0             # outside the lens; within the margin of its edge
    assert mask[240, 180] == 0                                 # the mast


# --- bench/compare.py end to end ---------------------------------------------------------------------------------

def tiny_onnx_model(path: Path) -> Path:
    """A stand-in classifier with guAlta's metadata: p_meteor = sigmoid(1000 · (mean input − 0.032)), which on the
    tiny night fires on some frames and not on others (the table's arithmetic is what is tested, not the model)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Reshape", ["mean", "column"], ["mean2"]),
             helper.make_node("Sub", ["mean2", "offset"], ["shifted"]),
             helper.make_node("Mul", ["shifted", "gain"], ["logit"]),
             helper.make_node("Sigmoid", ["logit"], ["p"]),
             helper.make_node("Sub", ["one", "p"], ["q"]),
             helper.make_node("Concat", ["p", "q"], ["probs"], axis=1)]
    constants = [helper.make_tensor("column", TensorProto.INT64, [2], [-1, 1]),
                 helper.make_tensor("offset", TensorProto.FLOAT, [], [0.032]),
                 helper.make_tensor("gain", TensorProto.FLOAT, [], [1000.0]),
                 helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])]
    graph = helper.make_graph(nodes, "brightness", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                  ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"classes": '["meteor", "no-meteor"]', "input_size": "32", "input_kind": "diff",
                                   "arch": "brightness"})
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """A 12-frame simulated night compared with a stand-in ONNX model: (stdout, table file, per-frame CSV)."""
    from gualta.simulate import Rates, simulate_night

    root = tmp_path_factory.mktemp("compare")
    simulate_night(root / "nights", "20211110", frames=12, seed=3, rates=Rates(meteor=0.4), workers=1,
                   progress=False)
    model = tiny_onnx_model(root / "brightness.onnx")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "compare.py"), "--nights", str(root / "nights"),
                           "--model", str(model), "--out", str(root / "table.md")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout, root / "table.md", root / "table_frames.csv"


def parse_table(text: str) -> pd.DataFrame:
    """The markdown table in text as strings, headers without their '(n=…)' counts."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    names = [name.split(" (")[0] if name != "method" else name for name in header]
    return pd.DataFrame(rows, columns=names)


def expected_rates(frames: pd.DataFrame) -> dict[str, float | None]:
    """The table's columns recomputed from per-frame rows of one method."""
    meteor, event = frames["label"] == "meteor", frames["event"].fillna("none")
    hit = frames["detected"] == 1
    groups = {"meteor recall": meteor, "faint recall": meteor & (frames["peak_snr"] < 5),
              "fireball recall": meteor & (event == "fireball"),
              "FP clear": ~meteor & (event == "none") & (frames["clouds"] < 0.05),
              "FP cloudy": ~meteor & (frames["clouds"] >= 0.2),
              "FP satellite": ~meteor & (event == "satellite"), "FP plane": ~meteor & (event == "plane")}
    rates = {name: float(hit[group].mean()) if group.any() else None for name, group in groups.items()}
    rates["precision"] = float(meteor[hit].mean()) if hit.any() else None
    return rates


def test_compare_prints_one_table_of_every_method(compared):
    stdout, table_file, _ = compared
    table = parse_table(stdout)
    assert list(table.columns) == EXPECTED_COLUMNS
    assert list(table["method"]) == ["guAlta brightness (p ≥ 0.85)", *CLASSICAL]
    for column in EXPECTED_COLUMNS[1:-1]:
        values = [float(v) for v in table[column] if v != "–"]
        assert all(0 <= v <= 1 for v in values), column
    assert all(float(v) > 0 for v in table["frames/s"])
    assert "decode" in stdout and "frames/s" in stdout
    assert parse_table(table_file.read_text()).equals(table)


def test_compare_table_matches_its_per_frame_csv(compared):
    stdout, _, csv = compared
    table = parse_table(stdout).set_index("method")
    frames = pd.read_csv(csv)
    assert set(frames["method"]) == set(table.index)
    per_method = frames.groupby("method")["file"].apply(list)
    assert len(set(map(tuple, per_method))) == 1                 # every method scored the same frames
    files = per_method.iloc[0]
    assert len(files) == 11 and "image-20211110200000.jpg" not in files     # the first frame is skipped
    for method, rows in frames.groupby("method"):
        for column, value in expected_rates(rows).items():
            shown = table.loc[method, column]
            if value is None:
                assert shown == "–", (method, column)
            else:
                assert float(shown) == pytest.approx(value, abs=5e-4), (method, column)
        assert float(table.loc[method, "frames/s"]) == pytest.approx(1 / rows["seconds"].median(), rel=0.01)
    assert frames["label"].eq("meteor").any()


def test_compare_max_frames_and_no_model(compared, tmp_path):
    stdout, table_file, _ = compared
    nights = table_file.parent / "nights"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "compare.py"), "--nights", str(nights / "20211110"),
                           "--no-model", "--max-frames", "3", "--csv", str(tmp_path / "frames.csv")],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert list(parse_table(done.stdout)["method"]) == CLASSICAL
    frames = pd.read_csv(tmp_path / "frames.csv")
    assert len(frames) == 3 * len(CLASSICAL)
