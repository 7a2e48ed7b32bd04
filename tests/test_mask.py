"""guAlta_mask: the parts of the frame an operator blacks out (the camera's own text set larger than AllSky's
default, a flickering light) are not read by the fireball and streak checks, in batch and in real time; the model
reads the whole frames, and the rest of the frame is decided as before."""
from __future__ import annotations

import math
import re
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from gualta import allsky
from gualta.client_errors import ClientError
from gualta.config import load_settings
from gualta.detect import SAME_PLACE_MIN, SAME_PLACE_PX, NightSummary, run_batch
from gualta.model import load_model
from gualta.realtime import Watcher, run_realtime
from gualta.report import Outbox
from gualta.scores import read_scores
from helpers_client import copy_night, settings, windows_imwrite
from helpers_service import child_env

REPO = Path(__file__).resolve().parents[1]
NIGHT = "20211110"
TEXT_BOX = (10, 770, 520, 966)      # x1, y1, x2, y2: where the camera writes its larger text, over the sky's edge
CORNER_BOX = (1030, 0, 1304, 160)   # ... and where it writes it in a corner off the lens


def night_with_text(night: Path, root: Path, text: str = "") -> Path:
    """A copy of the night (every frame written again the same way) with large text that changes every frame, as
    AllSky writes it when its font is set larger than the default: in TEXT_BOX, reaching over the sky circle's edge
    (`text` "over the sky"), or in the top-right corner off the lens, CORNER_BOX (`text` "in the corner")."""
    copy = root / night.name
    copy.mkdir(parents=True)
    for i, frame in enumerate(allsky.list_frames(night)):
        image = cv2.imread(str(frame))
        taken = datetime.strptime(frame.stem[len("image-"):], allsky.TIME_FORMAT)
        lines = [taken.strftime("%H:%M:%S"), f"Stars: {180 + 37 * i % 91}", f"Exp {30 - 0.37 * (i % 7):.1f}s"]
        if text == "over the sky":
            lines[-1] = f"Exposure: {30 - 0.37 * (i % 7):.2f} s"
        for row, line in enumerate(lines if text else []):
            origin = (20, 820 + 55 * row) if text == "over the sky" else (1040, 50 + 45 * row)
            cv2.putText(image, line, origin, cv2.FONT_HERSHEY_SIMPLEX, 1.6 if text == "over the sky" else 1.2,
                        (255, 255, 255), 2, cv2.LINE_AA)
        cv2.imwrite(str(copy / frame.name), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return copy


def mask_file(path: Path, shape=(976, 1304)) -> Path:
    """A mask image of a frame drawn at `shape`: white, black over TEXT_BOX."""
    mask = np.full(shape, 255, np.uint8)
    scale = shape[1] / 1304
    x1, y1, x2, y2 = (round(value * scale) for value in TEXT_BOX)
    mask[y1:y2, x1:x2] = 0
    cv2.imwrite(str(path), mask)
    return path


def in_text_box(row: dict, box: tuple[int, int, int, int] = TEXT_BOX) -> bool:
    x1, y1, x2, y2 = box
    centre_x, centre_y = (int(row["x1"]) + int(row["x2"])) / 2, (int(row["y1"]) + int(row["y2"])) / 2
    return x1 <= centre_x <= x2 and y1 <= centre_y <= y2


def decisions(rows: list[dict]) -> list[tuple]:
    """Each row's decision, as text (the outbox keeps numbers, the scores CSV text)."""
    return [tuple(str(row[key]) for key in ("file", "detection", "flag", "x1", "y1", "x2", "y2")) for row in rows]


def batch_rows(tmp_path: Path, night: Path, model: Path, **overrides) -> list[dict]:
    """The scores CSV of a batch run (threshold 1: only the checks' own candidates, whatever the tiny model says)."""
    scores = tmp_path / "scores.csv"
    run_batch(settings(tmp_path, model, threshold=1.0, **overrides), night, scores, upload=False,
              say=lambda line: None, progress=False)
    return read_scores(scores)


@pytest.fixture(scope="module")
def nights(client_night, tmp_path_factory):
    """The client night written again without and with the camera's larger text (over the sky's edge, in a corner)."""
    root = tmp_path_factory.mktemp("mask-nights")
    return (night_with_text(client_night, root / "plain"), night_with_text(client_night, root / "text", "over the sky"),
            night_with_text(client_night, root / "corner", "in the corner"))


def test_a_mask_leaves_the_cameras_larger_text_out_and_the_rest_as_it_was(nights, tiny_model, tmp_path):
    """AllSky's text set larger than its default reaches beyond the top-left box the checks leave out: its digits,
    changing every frame, read as thin streaks seen in one frame only, and were reported as meteors."""
    plain, texted, _ = nights
    unmasked = batch_rows(tmp_path / "a", texted, tiny_model)
    assert [row for row in unmasked if row["detection"] == "1" and in_text_box(row)]     # the text's false meteors
    masked = batch_rows(tmp_path / "b", texted, tiny_model, mask=mask_file(tmp_path / "mask.png"))
    assert not [row for row in masked if row["x1"] and in_text_box(row)]
    before = batch_rows(tmp_path / "c", plain, tiny_model)
    assert any(row["detection"] == "1" for row in before)                       # the night's meteors, still found
    assert decisions(masked) == decisions(before)


def test_a_mask_of_another_size_is_stretched_to_the_frame(nights, tiny_model, tmp_path):
    """A mask drawn on a frame shrunk to half its size masks the same places."""
    _, texted, _ = nights
    half = batch_rows(tmp_path / "a", texted, tiny_model, mask=mask_file(tmp_path / "half.png", shape=(488, 652)))
    whole = batch_rows(tmp_path / "b", texted, tiny_model, mask=mask_file(tmp_path / "whole.png"))
    assert not [row for row in half if row["x1"] and in_text_box(row)]
    assert decisions(half) == decisions(whole)


def watched_with_mask(night: Path, tmp_path: Path, model: Path) -> tuple[Path, Path, object]:
    """The night copied under a watcher's images root, a mask over TEXT_BOX, and the watcher's settings (threshold 1:
    only the checks' own candidates)."""
    mask = mask_file(tmp_path / "mask.png")
    config = settings(tmp_path, model, main_folder=tmp_path / "images", threshold=1.0, mask=mask)
    return copy_night(night, tmp_path / "images"), mask, config


def test_the_watcher_leaves_the_masked_text_out_too(nights, tiny_model, tmp_path):
    _, texted, _ = nights
    _, mask, config = watched_with_mask(texted, tmp_path, tiny_model)
    clock = [datetime(2021, 11, 10, 22, 0)]
    watcher = Watcher(config, load_model(tiny_model, threads=1), threading.Event(), say=lambda line: None,
                      settle_s=0.0, clock=lambda: clock[0])
    watcher.tick()
    clock[0] = datetime(2021, 11, 11, 8, 0)                          # the window closes: the night with it
    watcher.tick()
    watcher.outbox.close()
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        watched = outbox.night_rows(NIGHT)
    assert len(watched) == len(allsky.list_frames(texted))
    assert not [row for row in watched if row["x1"] != "" and in_text_box(row)]
    batch = batch_rows(tmp_path / "b", texted, tiny_model, mask=mask)
    assert decisions(watched) == decisions(batch)


def test_a_night_left_unfinished_is_decided_with_the_mask_too(nights, tiny_model, tmp_path):
    """A night the watcher decides after the next has begun (it was off when that night ended) leaves the masked text
    out as the night it watches does."""
    _, texted, _ = nights
    night, mask, config = watched_with_mask(texted, tmp_path, tiny_model)
    watcher = Watcher(config, load_model(tiny_model, threads=1), threading.Event(), say=lambda line: None,
                      settle_s=0.0)
    watcher.left_nights.append(night)
    while watcher.catch_up():
        pass
    watcher.outbox.close()
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        caught_up = outbox.night_rows(NIGHT)
    assert len(caught_up) == len(allsky.list_frames(texted))
    assert decisions(caught_up) == decisions(batch_rows(tmp_path / "b", texted, tiny_model, mask=mask))


def test_a_mask_that_cannot_be_used_is_one_clear_error_before_any_frame(nights, tiny_model, tmp_path):
    _, texted, _ = nights
    black = tmp_path / "black.png"
    cv2.imwrite(str(black), np.zeros((976, 1304), np.uint8))
    (tmp_path / "notes.png").write_text("not an image")
    for mask, why in [(tmp_path / "missing.png", "cannot read (No such file or directory)"),
                      (tmp_path / "notes.png", "not a decodable image"),
                      (black, "black all over: nothing would be looked at")]:
        run = subprocess.run([sys.executable, str(REPO / "guAlta.py"), "batch", "--folder", str(texted), "--scores",
                              str(tmp_path / "scores.csv"), "--model", str(tiny_model), "--no-upload", "--mask",
                              str(mask)], capture_output=True, text=True, timeout=120, env=child_env())
        assert run.returncode == 1 and "Traceback" not in run.stderr
        assert f"guAlta batch: cannot use the mask {mask}: {why}" in run.stderr
        assert not (tmp_path / "scores.csv").exists()
        with pytest.raises(ClientError, match="cannot use the mask"):    # the watcher: at its start, not at night
            run_realtime(settings(tmp_path, tmp_path / "no-model.onnx", mask=mask), upload=False)


def test_the_mask_setting_is_a_path_beside_the_settings_file_or_nothing(tmp_path):
    config = tmp_path / "site" / "guAltaConfig.py"
    config.parent.mkdir()
    config.write_text('guAlta_mask = "masks/roof.png"\n')
    assert load_settings(config, env={}).mask == config.parent / "masks" / "roof.png"
    config.write_text('guAlta_mask = ""\n')
    assert load_settings(config, env={}).mask is None
    assert load_settings(config, env={"GUALTA_MASK": "m.png"}).mask == Path.cwd() / "m.png"


def test_detections_at_one_place_get_a_hint_at_the_nights_end(nights, tiny_model, tmp_path):
    """An operator who has not drawn a mask learns from the night's last line where the text or the light is."""
    plain, texted, _ = nights
    lines = []
    summary = run_batch(settings(tmp_path, tiny_model, threshold=1.0), texted, tmp_path / "scores.csv", upload=False,
                        say=lines.append, progress=False)
    rows = [row for row in read_scores(tmp_path / "scores.csv") if row["detection"] == "1"]
    hint = re.search(r"\. (\d+) detections at one place \(x (\d+), y (\d+) in the frame\): the camera's own text or a "
                     r"light\? guAlta_mask leaves it out \(`python guAlta.py mask` draws one; README, \"A mask\"\)$",
                     lines[-1])
    assert hint and lines[-1] == summary.text(), lines[-1]
    count, x, y = map(int, hint.groups())
    assert count >= SAME_PLACE_MIN and in_text_box({"x1": x, "x2": x, "y1": y, "y2": y})
    centres = [((int(row["x1"]) + int(row["x2"])) / 2, (int(row["y1"]) + int(row["y2"])) / 2) for row in rows]
    assert count == sum(math.dist(centre, (x, y)) <= SAME_PLACE_PX + 1 for centre in centres)
    watched = NightSummary(NIGHT)
    for row in read_scores(tmp_path / "scores.csv"):
        watched.count_row(row)
    assert watched.same_place_hint() == hint.group(0)                     # the watcher's line at the night's end
    model_made = NightSummary(NIGHT)               # the model's own detections: a mask does not change what it scores
    for row in read_scores(tmp_path / "scores.csv"):
        model_made.count_row({**row, "note": ""})
    assert model_made.detections == summary.detections and model_made.same_place_hint() == ""
    quiet = run_batch(settings(tmp_path / "p", tiny_model, threshold=1.0), plain, tmp_path / "plain.csv",
                      upload=False, say=lambda line: None, progress=False)
    assert quiet.detections and "at one place" not in quiet.text()


def test_guAlta_mask_draws_a_mask_from_the_nights_frames_and_never_writes_over_one(nights, tiny_model, tmp_path):
    """`guAlta.py mask` writes a first mask: the sky the night's frames show white, the rest black — outside the lens,
    the skyline and text off the sky; the operator paints in what else is to be left out. A mask already there (one
    painted by hand) is written over only when asked."""
    plain, _, corner = nights
    out = tmp_path / "masks" / "roof.png"

    def draw(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "guAlta.py"), "mask", "--folder", str(corner), "--out",
                               str(out), *extra], capture_output=True, text=True, timeout=120, env=child_env())

    made = draw()
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"wrote {out}: white where the frames of night {NIGHT} show sky (")
    mask = cv2.imread(str(out), cv2.IMREAD_GRAYSCALE)
    frame = allsky.list_frames(corner)[5].name
    text = cv2.absdiff(cv2.imread(str(corner / frame), cv2.IMREAD_GRAYSCALE),
                       cv2.imread(str(plain / frame), cv2.IMREAD_GRAYSCALE)) > 100      # the text's pixels
    assert mask.shape == (976, 1304) and mask[488, 652] == 255 and text.sum() > 1000 and not mask[text].any()
    unmasked = batch_rows(tmp_path / "c", corner, tiny_model)
    assert [row for row in unmasked if row["detection"] == "1" and in_text_box(row, CORNER_BOX)]
    masked = batch_rows(tmp_path / "a", corner, tiny_model, mask=out)
    assert not [row for row in masked if row["x1"] and in_text_box(row, CORNER_BOX)]
    assert decisions(masked) == decisions(batch_rows(tmp_path / "b", plain, tiny_model, mask=out))
    assert any(row["detection"] == "1" for row in masked)                        # the night's meteors, still found
    out.write_bytes(b"painted by hand")
    again = draw()
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert f"guAlta mask: {out} exists (a mask drawn by hand is not written over)" in again.stderr
    assert out.read_bytes() == b"painted by hand"
    assert draw("--replace").returncode == 0 and cv2.imread(str(out), cv2.IMREAD_GRAYSCALE) is not None
    empty = subprocess.run([sys.executable, str(REPO / "guAlta.py"), "mask", "--folder", str(tmp_path / "masks"),
                            "--out", str(tmp_path / "none.png")], capture_output=True, text=True, timeout=120,
                           env=child_env())
    assert empty.returncode == 1 and "at least 3 are needed" in empty.stderr and not (tmp_path / "none.png").exists()


def test_the_mask_setting_to_paste_reads_back_as_the_path_written(nights, tmp_path):
    """`guAlta.py mask` said `set guAlta_mask = "C:\\Users\\pi\\guAlta\\mask.png"`: pasted into the settings file
    (Python) the \\U was a SyntaxError, a \\n or \\t changed the path without a word, a quote in it broke the line.
    The assignment it prints now, run as Python, gives back the path written."""
    from gualta.frames import write_mask

    _, _, corner = nights
    out = tmp_path / 'a\\new "roof"' / "mask.png"
    said = write_mask(settings(tmp_path, Path("unused.onnx")), corner, out)
    assignment = said.rsplit("set ", 1)[1]
    setting = {}
    exec(assignment, setting)
    assert assignment.startswith("guAlta_mask = ") and setting["guAlta_mask"] == str(out.resolve())
    assert cv2.imread(setting["guAlta_mask"], cv2.IMREAD_GRAYSCALE).shape == (976, 1304)


def test_a_mask_is_written_into_a_folder_named_in_any_language(nights, tmp_path, monkeypatch):
    """OpenCV's imwrite cannot open a non-ASCII path on Windows: `guAlta.py mask --out 'Cámara/mask.png'` said
    "cannot write". The mask is encoded by OpenCV and written by Python."""
    from gualta.frames import write_mask

    windows_imwrite(monkeypatch)
    out = tmp_path / "Cámara Иван" / "mask.png"
    write_mask(settings(tmp_path, Path("unused.onnx")), nights[2], out)
    assert cv2.imdecode(np.fromfile(out, np.uint8), cv2.IMREAD_GRAYSCALE).shape == (976, 1304)


def test_a_mask_redrawn_and_cut_short_leaves_the_one_in_use_whole(nights, tmp_path, monkeypatch):
    """`mask --replace` killed (or out of disk) while it wrote left a mask cut short in place of the one in use: the
    watcher's next start refused it. The new mask is written beside it and renamed over it once whole."""
    from gualta import preprocess
    from gualta.frames import write_mask

    out = tmp_path / "mask.png"
    write_mask(settings(tmp_path, Path("unused.onnx")), nights[2], out)
    in_use = out.read_bytes()

    def killed(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(preprocess.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_mask(settings(tmp_path, Path("unused.onnx")), nights[1], out, replace=True)
    assert out.read_bytes() == in_use


@pytest.mark.parametrize("length", [3, 6, 12, 24, 25, 100])
def test_a_mask_is_drawn_from_frames_spread_over_the_whole_night(length, monkeypatch):
    """A night of 6 frames (a first mask drawn early in the camera's first night) was refused, "2 frame(s) of one
    size could be read: at least 3 are needed": 25 frames were spread over a night of 25, so a shorter night was read
    in its first part only (12 frames: its first 6). Every frame of a short night is read, and the first and the
    last of a long one."""
    from gualta import frames as frames_module

    read = []
    sky = np.random.default_rng(0).integers(20, 60, (40, 60), dtype=np.uint8)
    monkeypatch.setattr(frames_module, "read_or_none", lambda path: read.append(path) or sky)
    monkeypatch.setattr(frames_module, "estimate_sky_mask", lambda images, margin: np.full((40, 60), 255, np.uint8))
    night = [Path(f"image-2021111020{minute:04d}.jpg") for minute in range(length)]
    frames_module.drawn_mask(night)
    if length <= frames_module.MASK_FRAMES:
        assert set(read) == set(night)
    else:
        assert night[0] in read and night[-1] in read and len(set(read)) >= frames_module.MASK_FRAMES


def sky_frame(seed: int, shape: tuple[int, int] = (40, 60), level: int = 40) -> np.ndarray:
    """A small night frame: a lens circle (`level` DN, dim by default, and its noise) on black."""
    frame = np.zeros(shape, np.uint8)
    cv2.circle(frame, (shape[1] // 2, shape[0] // 2), min(shape) // 2 - 2, level, -1)
    noise = np.random.default_rng(seed).integers(0, 6, shape, dtype=np.uint8)
    return np.where(frame > 0, frame + noise, 0).astype(np.uint8)


def drawn_from(images: list[np.ndarray | None], monkeypatch) -> np.ndarray:
    """`drawn_mask` over a night of these frames, in order (None: one that cannot be read)."""
    from gualta import frames as frames_module

    night = [Path(f"image-2021111020{minute:04d}.jpg") for minute in range(len(images))]
    monkeypatch.setattr(frames_module, "read_or_none", dict(zip(night, images)).get)
    return frames_module.drawn_mask(night)


def test_a_mask_is_drawn_from_a_night_whose_frame_size_changed(monkeypatch):
    """A camera changed mid-night (its last frames of another size): the frames of the night's usual size draw the
    mask, as if the others were not there (pairs of both sizes compared together: numpy's "operands could not be
    broadcast together")."""
    night = [sky_frame(seed) for seed in range(8)] + [sky_frame(seed, (30, 50)) for seed in range(8, 12)]
    mask = drawn_from(night, monkeypatch)
    assert mask.shape == (40, 60) and mask.any()
    assert np.array_equal(mask, drawn_from(night[:8], monkeypatch))


@pytest.mark.parametrize("level", [40, 120])
def test_black_frames_leave_a_drawn_mask_as_it_was(level, monkeypatch):
    """A night whose camera gave black frames for a while: they are left out (outnumbering the sky's frames in the
    median the sky is found in, they would draw a mask black all over), and so are the pairs they are in (a bright
    sky — moonlit, twilight — beside a black frame read as changing in most pairs: masked out as the camera's text)."""
    black = np.zeros((40, 60), np.uint8)
    skies = [sky_frame(seed, level=level) for seed in range(3)]
    without = drawn_from(skies, monkeypatch)
    assert without.any()
    assert np.array_equal(drawn_from([skies[0], black, black, skies[1], black, black, black, skies[2]], monkeypatch),
                          without)


def test_a_night_with_two_readable_frames_draws_no_mask(monkeypatch):
    """Two frames are too few to tell the sky from what passes over it: one clear error, not a mask."""
    with pytest.raises(ValueError, match=r"^2 frame\(s\) of one size could be read: at least 3 are needed$"):
        drawn_from([sky_frame(0), None, sky_frame(1), None], monkeypatch)


def test_the_changing_digits_of_one_line_of_text_are_masked_with_the_gaps_between_them():
    """The digits of the camera's clock change every frame, the spaces between them never: changes up to
    MASK_TEXT_LINE_PX apart on a row are one line of text, masked whole (each digit masked alone would leave the
    gaps between them read, the edges of a line of text); farther apart, two."""
    from gualta.frames import MASK_TEXT_LINE_PX, restless_pixels

    before, after = np.zeros((60, 400), np.uint8), np.zeros((60, 400), np.uint8)
    after[30, [20, 20 + MASK_TEXT_LINE_PX - 1]] = 255                  # two digits of one line
    after[30, [200, 200 + MASK_TEXT_LINE_PX + 20]] = 255               # two lights on the skyline
    restless = restless_pixels([(before, after), (after, before)])
    assert restless[30, 20:20 + MASK_TEXT_LINE_PX].all()
    assert restless[30, 200] and restless[30, 200 + MASK_TEXT_LINE_PX + 20]
    assert not restless[30, 200 + (MASK_TEXT_LINE_PX + 20) // 2]


def test_guAlta_mask_named_without_an_image_extension_is_one_clear_error(nights, tmp_path):
    """OpenCV writes no file it cannot tell the format of by its name: said in one line, before any frame is read."""
    _, texted, _ = nights
    named = subprocess.run([sys.executable, str(REPO / "guAlta.py"), "mask", "--folder", str(texted), "--out",
                            str(tmp_path / "mask")], capture_output=True, text=True, timeout=120, env=child_env())
    assert named.returncode == 1 and "Traceback" not in named.stderr
    assert f"guAlta mask: cannot write a mask named {tmp_path / 'mask'}: give it an image file's name" in named.stderr
    assert not (tmp_path / "mask").exists()


def test_the_model_reads_the_whole_frames_under_a_mask(client_night, tmp_path):
    """The model was trained on whole frames: fed masked ones, its scores moved (faint meteors lost), and the camera's
    movement, measured on the frame's lasting edges, was measured on the mask's own edge instead (the same in both
    frames: a shaken frame's difference lit up as if unaligned). Its input is the same with a mask as without."""
    from gualta.detect import prepare
    from gualta.frames import NightFrames, drawn_mask

    files = allsky.list_frames(client_night)
    shaken = tmp_path / NIGHT
    shaken.mkdir()
    for frame, (dx, dy) in zip(files[:2], [(0.0, 0.0), (1.2, -0.9)]):
        image = cv2.warpAffine(cv2.imread(str(frame)), np.float32([[1, 0, dx], [0, 1, dy]]), (1304, 976),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        cv2.imwrite(str(shaken / frame.name), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    mask = drawn_mask(files)
    for night in (client_night, shaken):
        pair = allsky.list_frames(night)[:2]
        whole, model_input = prepare(NightFrames(pair), pair[1])
        masked, masked_input = prepare(NightFrames(pair, mask=mask), pair[1])
        assert np.array_equal(masked_input, model_input) and np.array_equal(masked.diff, whole.diff)
        assert masked.score is None and whole.diff.any()


def test_a_mask_that_cannot_be_read_at_a_new_night_leaves_the_last_one_in_use(tiny_model, tmp_path, caplog):
    """The watcher reads the mask again for each night: one half saved or deleted just then stopped it (and a service
    manager restarting it stopped it again, night after night). It warns and goes on with the mask it read before."""
    mask = mask_file(tmp_path / "mask.png")
    watcher = Watcher(settings(tmp_path, tiny_model, main_folder=tmp_path / "images", mask=mask),
                      load_model(tiny_model, threads=1), threading.Event(), say=lambda line: None)
    first = watcher.night_mask()
    assert first is not None and not first[800:900, 100:400].any() and first[488, 652] == 255
    mask.write_bytes(b"half")
    assert watcher.night_mask() is first
    assert re.search(f"cannot use the mask {re.escape(str(mask))}: (truncated|not a)", caplog.text)
    assert "the mask read before is used" in caplog.text
    cv2.imwrite(str(mask), np.full((976, 1304), 255, np.uint8))                 # the operator's new mask
    assert watcher.night_mask().all()
    watcher.outbox.close()


def test_a_drawn_mask_leaves_out_text_written_over_the_sky_as_it_changes_every_frame(nights, tiny_model, tmp_path):
    """Text the camera writes over the sky itself is sky to the mask's sky estimate; its digits change from one frame
    to the next in every pair, where a meteor or a cloud's edge passes a spot in few: those pixels are black too."""
    from gualta.frames import drawn_mask

    plain, texted, _ = nights
    mask = drawn_mask(allsky.list_frames(texted))
    frame = allsky.list_frames(texted)[5].name
    text = cv2.absdiff(cv2.imread(str(texted / frame), cv2.IMREAD_GRAYSCALE),
                       cv2.imread(str(plain / frame), cv2.IMREAD_GRAYSCALE)) > 100
    assert (mask[text] == 0).mean() > 0.95
    cv2.imwrite(str(tmp_path / "drawn.png"), mask)
    masked = batch_rows(tmp_path / "a", texted, tiny_model, mask=tmp_path / "drawn.png")
    assert not [row for row in masked if row["x1"] and in_text_box(row)]
    assert decisions(masked) == decisions(batch_rows(tmp_path / "b", plain, tiny_model, mask=tmp_path / "drawn.png"))


def test_the_fireball_check_does_not_read_a_masked_light(client_night, tmp_path):
    """A bright, saturated streak inside the mask (a car's lights, a lamp switched on) is no fireball: the fireball
    check reads the masked frames; the same streak outside the mask is one."""
    from gualta.detect import prepare
    from gualta.frames import NightFrames

    pair = tmp_path / NIGHT
    pair.mkdir()
    first, second = allsky.list_frames(client_night)[:2]
    (pair / first.name).write_bytes(first.read_bytes())
    image = cv2.imread(str(second))
    cv2.line(image, (100, 850), (400, 930), (255, 255, 255), 9)                 # in TEXT_BOX
    cv2.imwrite(str(pair / second.name), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    frames = allsky.list_frames(pair)
    mask = cv2.imread(str(mask_file(tmp_path / "mask.png")), cv2.IMREAD_GRAYSCALE)
    assert prepare(NightFrames(frames), frames[1])[0].bright is not None
    assert prepare(NightFrames(frames, mask=mask), frames[1])[0].bright is None
