"""The thesis' frame operations, pinned on tiny hand-made arrays whose expected values are computed by hand."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from gualta import preprocess
from gualta.preprocess import (BadFrame, binary_difference, difference_image, make_version, pad_to_square,
                               read_gray, resize_area, side_by_side, subtract, threshold, to_gray)

W = 255


def u8(rows) -> np.ndarray:
    return np.array(rows, dtype=np.uint8)


# --- grayscale -------------------------------------------------------------------------------------------------

def test_to_gray_uses_opencv_bgr_weights():
    # Y = 0.114 B + 0.587 G + 0.299 R, with channels in OpenCV's B, G, R order.
    bgr = u8([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]])
    gray = to_gray(bgr)
    assert gray.shape == (1, 4)
    assert gray.dtype == np.uint8
    # 0.114·255 = 29.07 · 0.587·255 = 149.7 · 0.299·255 = 76.2 · 1.14 + 11.74 + 8.97 = 21.85
    assert gray.tolist() == [[29, 150, 76, 22]]


def test_to_gray_leaves_gray_input_unchanged():
    gray = u8([[0, 7, 200], [255, 3, 4]])
    out = to_gray(gray)
    np.testing.assert_array_equal(out, gray)
    assert out.dtype == np.uint8


# --- subtraction -----------------------------------------------------------------------------------------------

def test_subtract_saturates_instead_of_wrapping():
    current = u8([[10, 250, 100, 0, 255]])
    previous = u8([[200, 5, 100, 255, 0]])
    # 10 − 200 would wrap to 66 with numpy uint8 arithmetic; the thesis' cv2.subtract clips to 0.
    assert subtract(current, previous).tolist() == [[0, 245, 0, 0, 255]]


def test_subtract_is_not_symmetric():
    a, b = u8([[50]]), u8([[20]])
    assert subtract(a, b).tolist() == [[30]]
    assert subtract(b, a).tolist() == [[0]]


def test_subtract_rejects_mismatched_sizes():
    with pytest.raises(BadFrame, match="sizes differ"):
        subtract(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))


# --- threshold -------------------------------------------------------------------------------------------------

def test_threshold_default_is_3_5():
    assert preprocess.THRESHOLD == 3.5
    difference = u8([[0, 1, 3, 4, 5, 100, 255]])
    assert threshold(difference).tolist() == [[0, 0, 0, W, W, W, W]]
    assert threshold(difference).dtype == np.uint8


def test_threshold_custom_value():
    difference = u8([[9, 10, 11]])
    assert threshold(difference, 10).tolist() == [[0, 0, W]]


def test_brighter_by_3_vanishes_brighter_by_4_survives_dimmer_never():
    previous = u8([[100, 100, 100, 100, 100]])
    current = u8([[103, 104, 40, 100, 99]])
    assert binary_difference(current, previous).tolist() == [[0, W, 0, 0, 0]]


# --- resize ----------------------------------------------------------------------------------------------------

def test_resize_area_defaults_to_400():
    assert preprocess.TRAIN_SIZE == 400
    out = resize_area(np.zeros((10, 30), np.uint8))
    assert out.shape == (400, 400)


def test_single_white_pixel_becomes_a_quarter_gray_level():
    binary = np.zeros((800, 800), np.uint8)
    binary[0, 0] = W
    out = resize_area(binary)
    assert out.shape == (400, 400)
    assert out[0, 0] == 64            # 255 / 4 = 63.75, rounded
    assert int(out.sum()) == 64       # nothing else lit


def test_resize_area_averages_blocks():
    binary = u8([[W, W, 0, 0],
                 [W, 0, 0, 0],
                 [0, 0, W, W],
                 [0, 0, W, W]])
    # 2×2 blocks: 3/4 white → 191.25, empty → 0, full → 255
    assert resize_area(binary, 2).tolist() == [[191, 0], [0, 255]]


# --- dataset versions ------------------------------------------------------------------------------------------

WIDE = u8([[W, W, 0, 0],
           [W, W, 0, W]])           # 2×4: padding to 4×4 adds one black row above and one below


def test_pad_to_square_centres_with_black_rows():
    padded = pad_to_square(WIDE)
    assert padded.tolist() == [[0, 0, 0, 0],
                               [W, W, 0, 0],
                               [W, W, 0, W],
                               [0, 0, 0, 0]]


def test_pad_to_square_centres_with_black_columns():
    tall = u8([[W], [W], [0]])      # 3×1 → 3×3, one black column each side
    assert pad_to_square(tall).tolist() == [[0, W, 0], [0, W, 0], [0, 0, 0]]


def test_pad_to_square_odd_padding_and_square_input():
    wide = u8([[W, W, W, W]])       # 1×4 → 4×4: 3 black rows, split 1 above / 2 below
    assert pad_to_square(wide).tolist() == [[0, 0, 0, 0], [W, W, W, W], [0, 0, 0, 0], [0, 0, 0, 0]]
    square = u8([[W, 0], [0, W]])
    np.testing.assert_array_equal(pad_to_square(square), square)


def test_v1_pads_then_area_resizes():
    out = make_version(WIDE, "v1", size=4)
    # same side as the padded square: INTER_AREA is the identity, so this shows the centred black rows
    assert out.tolist() == pad_to_square(WIDE).tolist()


def test_v1_unambiguous_values():
    binary = u8([[W, W, W, W, 0, 0, 0, 0],
                 [W, W, W, 0, 0, 0, 0, W],
                 [W, W, 0, 0, 0, 0, 0, 0],
                 [W, W, 0, 0, 0, 0, 0, 0]])   # 4×8 → padded 8×8 (2 black rows above and below)
    out = make_version(binary, "v1", size=2)
    # quadrants of the padded 8×8 (16 pixels each):
    #   top-left  rows 0-3 cols 0-3: rows 2,3 of padding = binary rows 0,1 → 4 + 3 = 7 white → 111.6 → 112
    #   top-right rows 0-3 cols 4-7: 1 white → 15.9 → 16
    #   bottom-left rows 4-7 cols 0-3: binary rows 2,3 → 2 + 2 = 4 white → 63.75 → 64
    #   bottom-right: 0
    assert out.tolist() == [[112, 16], [64, 0]]


def test_v1_default_size_is_224_and_gray_levels_appear():
    binary = np.zeros((300, 400), np.uint8)
    binary[150, 200] = W
    out = make_version(binary, "v1")
    assert out.shape == (224, 224)
    assert 0 < out.max() < W            # area averaging dilutes a lone pixel into gray


def test_v2_pads_then_nearest_pure_black_and_white():
    out = make_version(WIDE, "v2", size=4)
    assert out.tolist() == pad_to_square(WIDE).tolist()
    rng = np.random.default_rng(0)
    binary = np.where(rng.random((300, 500)) > 0.9, W, 0).astype(np.uint8)
    big = make_version(binary, "v2")
    assert big.shape == (224, 224)
    assert set(np.unique(big)) <= {0, W}
    assert set(np.unique(big)) == {0, W}
    # the padded band (rows above/below the picture) stays black
    band = (500 - 300) // 2 * 224 // 500
    assert not big[:band - 1].any() and not big[-(band - 1):].any()


def test_v3_stretches_with_nearest():
    out = make_version(WIDE, "v3", size=4)
    # no padding: 2 rows stretched to 4 by repeating each row
    assert out.tolist() == [[W, W, 0, 0],
                            [W, W, 0, 0],
                            [W, W, 0, W],
                            [W, W, 0, W]]
    rng = np.random.default_rng(1)
    binary = np.where(rng.random((300, 500)) > 0.9, W, 0).astype(np.uint8)
    big = make_version(binary, "v3")
    assert big.shape == (224, 224)
    assert set(np.unique(big)) == {0, W}
    assert big[0].any() and big[-1].any()   # no black band: stretched, not padded


def test_v4_stretches_with_area_to_400():
    binary = u8([[W, 0, 0, 0, W, W, W, 0],
                 [0, 0, 0, 0, W, W, W, W]])
    # 2×8 → 2×2: each output averages 4 horizontal pixels of its own row (no padding)
    assert make_version(binary, "v4", size=2).tolist() == [[64, 191], [0, 255]]
    big = np.zeros((800, 800), np.uint8)
    big[0, 0] = W
    out = make_version(big, "v4")
    assert out.shape == (400, 400)
    assert out[0, 0] == 64


def test_v4_is_the_default_and_matches_resize_area():
    rng = np.random.default_rng(2)
    binary = np.where(rng.random((120, 160)) > 0.8, W, 0).astype(np.uint8)
    np.testing.assert_array_equal(make_version(binary), resize_area(binary))
    assert make_version(binary).shape == (400, 400)


@pytest.mark.parametrize("version", ["v5", "V4", "", "v0"])
def test_unknown_version_raises(version):
    with pytest.raises(ValueError, match="unknown dataset version"):
        make_version(np.zeros((4, 4), np.uint8), version)


# --- end to end ------------------------------------------------------------------------------------------------

def test_difference_image_end_to_end_on_colour_frames():
    previous = np.full((4, 4, 3), 100, np.uint8)          # gray 100 everywhere
    current = previous.copy()
    current[0:2, 0:2] = 200                               # a bright 2×2 patch: +100 → white
    current[2:4, 0] = (110, 110, 110)                     # +10 on three pixels of the bottom-left block
    current[2, 1] = (110, 110, 110)
    current[2, 2] = 102                                   # +2 (noise) → vanishes
    current[3, 3] = 0                                     # dimmer → never survives
    current[0, 3] = (0, 0, 255)                           # pure red: gray 76 < 100 → dimmer → gone
    current[1, 3] = (255, 255, 255)                       # white in colour → +155 → survives
    assert binary_difference(current, previous).tolist() == [[W, W, 0, 0],
                                                             [W, W, 0, W],
                                                             [W, W, 0, 0],
                                                             [W, 0, 0, 0]]
    out = difference_image(current, previous, size=2)
    # 2×2 blocks: TL 4/4 → 255 · TR 1/4 → 63.75 → 64 · BL 3/4 → 191.25 → 191 · BR 0
    assert out.tolist() == [[255, 64], [191, 0]]
    assert out.dtype == np.uint8


def test_difference_image_default_is_400_square():
    a = np.zeros((30, 50, 3), np.uint8)
    out = difference_image(a, a)
    assert out.shape == (400, 400) and not out.any()


def test_difference_image_rejects_mismatched_frames():
    with pytest.raises(BadFrame):
        difference_image(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 6, 3), np.uint8))


def test_bad_frame_is_a_value_error():
    assert issubclass(BadFrame, ValueError)


def test_side_by_side_is_448_by_224():
    frame = np.full((300, 500), 80, np.uint8)
    processed = np.full((400, 400), W, np.uint8)
    out = side_by_side(frame, processed)
    assert out.shape == (224, 448)
    assert (out[:, :224] == 80).all() and (out[:, 224:] == W).all()


# --- reading frames --------------------------------------------------------------------------------------------

def reason(info, path) -> str:
    """The message of a BadFrame without its path prefix (the path itself may contain any word)."""
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message[len(f"{path}: "):]


@pytest.fixture
def jpeg(tmp_path):
    # big and textured enough that the first half of the file already holds compressed scan data, so a naive
    # decoder would return a partly grey picture instead of failing
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:240, 0:320]
    image = ((xx + yy) % 256).astype(np.int16) + rng.integers(-20, 20, (240, 320))
    image = np.clip(image, 0, 255).astype(np.uint8)
    image = cv2.merge([image, image // 2, 255 - image])
    path = tmp_path / "image-20210812230000.jpg"
    assert cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path, image


def test_read_gray_decodes_a_real_jpeg(jpeg):
    path, image = jpeg
    gray = read_gray(path)
    assert gray.shape == (240, 320)
    assert gray.dtype == np.uint8
    assert gray.ndim == 2
    # JPEG is lossy: close to OpenCV's own grayscale conversion of the original, not equal
    expected = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(int)
    assert np.abs(gray.astype(int) - expected).mean() < 4
    assert read_gray(str(path)).shape == (240, 320)        # str paths too


def test_read_gray_weighs_a_png_s_colours_as_a_jpeg_s(tmp_path):
    """libpng's own colour-to-gray rounds 1 DN otherwise than OpenCV on a fifth of a sky's pixels, and at the 3.5 DN
    threshold a PNG camera's difference images were not what the model learnt from."""
    rng = np.random.default_rng(3)
    colour = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "image-20211110220000.png"), colour)
    assert np.array_equal(read_gray(tmp_path / "image-20211110220000.png"), to_gray(colour))
    cv2.imwrite(str(tmp_path / "image-20211110220030.png"), colour[..., 1])                 # a gray PNG as it is
    assert np.array_equal(read_gray(tmp_path / "image-20211110220030.png"), colour[..., 1])


def test_read_gray_zero_byte_file(tmp_path):
    path = tmp_path / "image-20210812230000.jpg"
    path.write_bytes(b"")
    with pytest.raises(BadFrame) as info:
        read_gray(path)
    assert reason(info, path) == "empty file"


def test_read_gray_truncated_jpeg(jpeg, tmp_path):
    path, _ = jpeg
    data = path.read_bytes()
    half = data[: len(data) // 2]
    assert b"\xff\xda" in half            # start-of-scan present: OpenCV alone would decode a partial picture
    truncated = tmp_path / "image-20210812230030.jpg"
    truncated.write_bytes(half)
    with pytest.raises(BadFrame) as info:
        read_gray(truncated)
    assert reason(info, truncated).startswith("truncated JPEG")


def test_read_gray_accepts_jpeg_with_trailing_zero_padding(jpeg, tmp_path):
    path, _ = jpeg
    padded = tmp_path / "image-20210812230030.jpg"
    padded.write_bytes(path.read_bytes() + b"\x00" * 16)
    assert read_gray(padded).shape == (240, 320)


def test_read_gray_text_file_named_jpg(tmp_path):
    path = tmp_path / "image-20210812230100.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(BadFrame) as info:
        read_gray(path)
    assert reason(info, path) == "not a decodable image"


def test_read_gray_missing_file(tmp_path):
    path = tmp_path / "image-20210812230130.jpg"
    with pytest.raises(BadFrame) as info:
        read_gray(path)
    assert reason(info, path).startswith("cannot read")
    assert "No such file" in reason(info, path)


@pytest.mark.parametrize("width, height, read", [(4056, 3040, (977, 1304)), (4608, 2592, (734, 1304)),
                                                 (3040, 4056, (1304, 977)), (1520, 2028, (1304, 977)),
                                                 (1600, 1200, (1200, 1600)), (1304, 976, (976, 1304))])
def test_large_frames_are_read_at_the_reference_scale(tmp_path, width, height, read):
    """Only a frame longer than 1.25 × the 1304 px reference is shrunk (aspect kept), either way up; gray and colour
    alike."""
    path = tmp_path / "image-20211110220000.jpg"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 60, (height, width, 3), dtype=np.uint8))
    assert preprocess.read_frame(path).shape == read
    assert preprocess.read_frame(path, colour=True).shape == (*read, 3)
    if read == (height, width):
        assert np.array_equal(preprocess.read_frame(path), preprocess.read_gray(path))


def shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """The picture moved by (dx, dy) px, as a camera shaken between two exposures takes it (bilinear)."""
    move = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, move, image.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


LENS_CENTRE = (661.0, 482.0)            # a 1304×976 frame's lens circle, a little off the frame's centre


def lens_scene(text: bool) -> np.ndarray:
    """A noiseless 1304×976 frame: a lens circle of radius 480 px (its sky 45 DN, a soft rim), twelve dark trees
    or roofs standing on its horizon, and (text) a caption at the top left."""
    image = cv2.circle(np.zeros((976, 1304), np.uint8), (661, 482), 480, 45, -1, cv2.LINE_AA)
    rng = np.random.default_rng(3)
    for degrees in np.arange(0, 360, 30) + rng.uniform(-8, 8, 12):
        outward = np.array([np.cos(np.radians(degrees)), np.sin(np.radians(degrees))])
        across = np.array([-outward[1], outward[0]]) * rng.uniform(15, 40)
        base, tip = LENS_CENTRE + 480 * outward, LENS_CENTRE + (480 - rng.uniform(30, 70)) * outward
        cv2.fillPoly(image, [np.round(np.array([base - across, tip, base + across]) * 16).astype(np.int32)], 0,
                     cv2.LINE_AA, shift=4)
    if text:
        cv2.putText(image, "2021-11-10 22:00:30  Exposure 30 s", (12, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.7, 200, 2,
                    cv2.LINE_AA)
    return cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.0)


def turn(degrees: float, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """The 2×3 movement of a camera turned by `degrees` about the lens centre (counter-clockwise as the frame is
    seen), then moved by (dx, dy) px."""
    motion = cv2.getRotationMatrix2D(LENS_CENTRE, degrees, 1.0)
    motion[:, 2] += (dx, dy)
    return motion


def exposure(scene: np.ndarray, motion: np.ndarray, seed: int) -> np.ndarray:
    """One 8-bit exposure of the scene with the camera moved by `motion`, with its own 1.2 DN noise."""
    moved = cv2.warpAffine(scene, motion, scene.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    noisy = moved + np.random.default_rng(seed).normal(0, 1.2, moved.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("text", [True, False], ids=["caption", "no caption"])
def test_a_turned_camera_is_measured_and_compared_allowing_for_it(text):
    """A camera turned about its lens between two frames moves each edge its own way: the skyline's trees by up to
    0.7 px at 0.08°, a caption in the corner more. The movement is measured as a translation and a turn on the
    previous frame's lasting edges (a translation alone missed it: a caption's movement taken for the whole frame's,
    or without a caption none at all), and the allowance reaches as far as the edge that moved most. A still pair
    is compared as before."""
    scene = lens_scene(text)
    previous, still = exposure(scene, turn(0), seed=1), exposure(scene, turn(0), seed=2)
    points = preprocess.lasting_edges(previous)[0]
    assert len(points) > 2000                                            # the rim, the trees (the caption)
    skyline = cv2.dilate((np.hypot(*np.gradient(scene)) >= 3).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    still_lit = (binary_difference(still, previous) > 0)[skyline].sum()
    assert preprocess.camera_shift(still, previous) < 0.05
    assert np.array_equal(binary_difference(still, previous), threshold(subtract(still, previous)))
    for motion in (turn(0.08), turn(-0.12, 0.4, -0.6)):
        current = exposure(scene, motion, seed=2)
        measured, moved = preprocess.camera_motion(current, previous)
        where = points @ motion[:, :2].T + motion[:, 2]
        assert np.abs(points @ measured[:, :2].T + measured[:, 2] - where).max() < 0.05       # every edge's place
        assert moved == pytest.approx(np.hypot(*(where - points).T).max(), abs=0.05)
        assert (threshold(subtract(current, previous)) > 0)[skyline].sum() > 1.5 * still_lit  # lit up as arcs
        assert (binary_difference(current, previous) > 0)[skyline].sum() < 0.5 * still_lit


def test_a_busy_frame_with_many_lasting_edges_is_measured(tmp_path):
    """A bright, busy frame (twilight, a high gain: 41,574 lasting edge pixels on a real sky) stopped the whole batch
    run: OpenCV's remap takes fewer than 32,767 rows of points."""
    y, x = np.mgrid[0:976, 0:1304].astype(np.float32)
    scene = 128 + 60 * np.sin(x / 3.5) * np.sin(y / 3.5)                         # edges everywhere: 17 DN a pixel
    previous, current = exposure(scene, turn(0), seed=1), exposure(scene, turn(0, 0.3, -0.2), seed=2)
    assert len(preprocess.lasting_edges(previous)[0]) > 100_000
    assert preprocess.camera_shift(current, previous) == pytest.approx(np.hypot(0.3, 0.2), abs=0.05)
    assert preprocess.camera_shift(exposure(scene, turn(0), seed=3), previous) < 0.05
    points = np.array([[0.5, 0.25], [10, 20], [1303.4, 975.9]], np.float32)
    assert np.allclose(preprocess.read_at(scene, points), cv2.remap(scene, points[:, :1], points[:, 1:],
                       cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).ravel())


def test_a_shaken_camera_is_compared_allowing_for_its_movement(client_night):
    """A camera moved by wind or a loose mount between two frames: the lens circle's rim and the skyline lit up as
    long arcs in the difference, which the model took for meteors (18–50 % of a shaking camera's empty frames
    reported). The movement is measured on the previous frame's strong edges; from SHAKE_PX on, the difference
    allows for it. Still frames measure well under it and are compared exactly as before."""
    from gualta import allsky

    frames = [preprocess.read_gray(path) for path in allsky.list_frames(client_night)[:4]]
    for previous, current in zip(frames, frames[1:]):                                   # a still camera
        assert preprocess.camera_shift(current, previous) < 0.15
        assert np.array_equal(binary_difference(current, previous),
                              preprocess.threshold(preprocess.subtract(current, previous)))
    previous, current = frames[1], frames[2]
    gradient = np.hypot(cv2.Sobel(previous.astype(np.float32), cv2.CV_32F, 1, 0), cv2.Sobel(
        previous.astype(np.float32), cv2.CV_32F, 0, 1)) / 8
    edges = gradient >= preprocess.EDGE_GRADIENT_DN                          # the rim, the skyline, the text
    still = (binary_difference(current, previous) > 0)[edges].sum()
    for dx, dy in ((0.5, 0.0), (-0.3, 0.4), (1.2, -0.9)):
        moved = shifted(current, dx, dy)
        measured = preprocess.camera_shift(moved, previous)     # a first-order measure: short of large movements
        assert measured == pytest.approx(np.hypot(dx, dy), abs=0.12) or 1.0 < measured < np.hypot(dx, dy)
        plain = preprocess.threshold(preprocess.subtract(moved, previous))
        assert (plain > 0)[edges].sum() > 1.5 * still                            # the edges lit up as arcs
        assert (binary_difference(moved, previous) > 0)[edges].sum() < 0.5 * still
    assert preprocess.camera_shift(np.zeros((40, 40), np.uint8), np.zeros((40, 40), np.uint8)) == 0.0   # no edges
    for previous, current in zip(frames, frames[1:]):         # a sky filling the frame: its stars move on their own
        sky, sky_before = current[250:750, 400:900], previous[250:750, 400:900]
        assert np.array_equal(binary_difference(sky, sky_before),
                              preprocess.threshold(preprocess.subtract(sky, sky_before)))


# --- writing an image ------------------------------------------------------------------------------------------

def test_an_image_write_cut_short_leaves_the_file_it_replaces_whole(tmp_path, monkeypatch):
    """A mask rewritten on a full disk was cut short in place: the file in use was left half written. The image is
    written beside it and renamed over it once whole; a write that fails leaves the old file byte for byte and says
    which file could not be written."""
    out = tmp_path / "mask.png"
    preprocess.write_image_file(out, np.full((20, 30), W, np.uint8))
    in_use = out.read_bytes()

    def full_disk(path, data):
        with open(path, "wb") as stream:
            stream.write(bytes(data)[:len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError, match=re.escape(f"cannot write {out}")):
        preprocess.write_image_file(out, np.zeros((20, 30), np.uint8))
    assert out.read_bytes() == in_use
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png"]


def test_an_image_that_cannot_be_renamed_into_place_leaves_no_part(tmp_path, monkeypatch):
    """A write that failed at its rename left a stray `mask.png.part` beside the mask. It is removed; the old file is
    left whole."""
    out = tmp_path / "mask.png"
    preprocess.write_image_file(out, np.full((20, 30), W, np.uint8))
    in_use = out.read_bytes()

    def refused(*_):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(preprocess.os, "replace", refused)
    with pytest.raises(OSError, match=re.escape(f"cannot write {out}")):
        preprocess.write_image_file(out, np.zeros((20, 30), np.uint8))
    assert out.read_bytes() == in_use and not list(tmp_path.glob("*.part"))
