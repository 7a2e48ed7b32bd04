"""The cross-frame cloud check on drawn difference images, through the Decider the client uses."""
from __future__ import annotations

import cv2
import numpy as np

from gualta import lightning
from gualta.clouds import (CLOUD_NEAR_MAX, CLOUD_PIECE_MIN_PX, CLOUD_REACH_PX, cloud_mask, near_pieces,
                          restless_blocks, restless_mask, restless_pieces)
from gualta.detect import CLOUD, FrameResult, detection_line
from gualta.fireball import Streak
from gualta.streak import Piece
from helpers_client import decide_in_order, frame_result, speckle, streak_piece

CLOUD_AT = (120, 150)
METEOR = ((250, 60), (320, 95))


def cloudy(centre=CLOUD_AT, *segments, seed: int = 0) -> np.ndarray:
    """Speckle with a cloud's edge (a fat bright blob) at `centre` and bright lines at `segments`."""
    image = speckle(seed)
    cv2.ellipse(image, centre, (30, 14), 20, 0, 360, 255, -1)
    for start, end in segments:
        cv2.line(image, start, end, 255, 2)
    return image


def filaments(centre=CLOUD_AT, seed: int = 0) -> np.ndarray:
    """Speckle with a moonlit cloud's edge of thin, winding filaments (no fat blob) around `centre`."""
    image, rng = speckle(seed), np.random.default_rng(seed)
    for start in rng.uniform(-25, 25, (6, 2)):
        steps = np.cumsum(rng.normal(0, 2.5, (12, 2)) + (1.5, 0.5), axis=0)
        points = np.round(np.array(centre) + start + steps).astype(np.int32)
        cv2.polylines(image, [points], False, 255, 1)
    return image


def moved(dx: int, dy: int = 0) -> tuple[int, int]:
    return CLOUD_AT[0] + dx, CLOUD_AT[1] + dy


def blob_model(diff: np.ndarray) -> float:
    """A stand-in for the model on drawn images: p(meteor) high while 100+ drawn (255) pixels are left."""
    return 0.99 if np.count_nonzero(diff == 255) >= 100 else 0.01


def middle(frame: np.ndarray, *, before=None, after=None, pieces=(), bright=None, after_pieces=(),
           **options) -> FrameResult:
    """The middle of three frames: a model's candidate (0.99) between frames the model scores low."""
    frames = [frame_result(0, 0.02, cloudy(moved(-6)) if before is None else before),
              frame_result(1, 0.99, frame, pieces=list(pieces), bright=bright),
              frame_result(2, 0.02, cloudy(moved(6, 2), seed=2) if after is None else after,
                           pieces=list(after_pieces))]
    return decide_in_order(frames, **{"rescore": blob_model, **options})[1]


def test_the_cloud_mask_is_the_candidate_s_pieces_that_an_adjacent_difference_has_nearby():
    frame = cloudy(CLOUD_AT, METEOR, seed=1)
    mask = cloud_mask(frame, [cloudy(moved(CLOUD_REACH_PX - 2, 3))])
    assert mask[CLOUD_AT[1], CLOUD_AT[0]] == 255 and mask[CLOUD_AT[1], CLOUD_AT[0] + 25] == 255
    assert not mask[55:100, 245:325].any()                               # the meteor is no blob
    assert not cloud_mask(frame, [cloudy((320, 320))]).any()               # the neighbour's cloud is elsewhere
    assert not cloud_mask(frame, [speckle(3)]).any()                      # the neighbour has no cloud
    assert not cloud_mask(frame, []).any()
    line_there = speckle(3)
    cv2.line(line_there, (90, 150), (150, 150), 255, 2)                   # a thin piece there explains it too...
    assert cloud_mask(frame, [line_there])[CLOUD_AT[1], CLOUD_AT[0]] == 255
    speck_there = speckle(3)
    speck_there[148:150, 118:122] = 255                                    # ... a speck does not
    assert np.count_nonzero(speck_there == 255) < CLOUD_PIECE_MIN_PX
    assert not cloud_mask(frame, [speck_there]).any()


def test_thin_cloud_filaments_are_cloud_where_an_adjacent_difference_has_them_too():
    frame = filaments(seed=1)
    cv2.line(frame, *METEOR, 255, 2)
    mask = cloud_mask(frame, [filaments(moved(4, 2), seed=1)])            # the same edge, drifted
    tangle = (frame == 255) & (np.arange(400)[None, :] < 200)
    assert np.mean(mask[tangle] == 255) > 0.8                              # the filaments are erased...
    assert not mask[55:100, 245:325].any()                                # ... the meteor is not
    assert not cloud_mask(frame, [filaments((320, 320), seed=2)])[tangle].any()      # the neighbour's are elsewhere
    decided = middle(filaments(seed=1), before=filaments(moved(-4), seed=1), after=filaments(moved(4, 2), seed=1))
    assert (decided.flag, decided.detection) == (CLOUD, False)


def edge_line(x_start: int, x_end: int, y: int, seed: int) -> np.ndarray:
    """Speckle with a thin cloud edge (a 2 px line) along row y from x_start to x_end."""
    image = speckle(seed)
    cv2.line(image, (x_start, y), (x_end, y), 255, 2)
    return image


def test_a_cloud_edge_that_drifted_8_px_is_cloud_and_one_that_drifted_twice_as_far_is_not():
    """A fast cloud's edge moves 8 px between frames: still the same cloud (with a reach 2 px shorter it was kept as a
    candidate)."""
    frame = edge_line(90, 150, 150, seed=1)
    assert cloud_mask(frame, [edge_line(90, 150, 158, seed=3)])[150, 120] == 255
    assert not cloud_mask(frame, [edge_line(90, 150, 166, seed=3)]).any()


def test_a_piece_mostly_near_a_neighbour_s_piece_is_cloud_and_one_a_third_near_is_not():
    """Over half of a cloud edge lying near the neighbour's edge makes it cloud (with the share raised to 60 %, a
    changing cloud whose edge only partly matched the neighbour's was kept as a candidate)."""
    frame = edge_line(90, 150, 150, seed=1)
    assert cloud_mask(frame, [edge_line(40, 115, 150, seed=3)])[150, 120] == 255       # ≈ 57 % of it near
    assert not cloud_mask(frame, [edge_line(40, 100, 150, seed=3)]).any()              # ≈ 33 %


def dense_speckle(seed: int) -> np.ndarray:
    """A sky of dense bright speckle (a noisy camera in twilight): 12 px specks everywhere."""
    image, rng = speckle(seed), np.random.default_rng(seed)
    for x, y in rng.integers(0, 396, (500, 2)):
        image[y:y + 3, x:x + 4] = 255
    return image


def test_in_a_sky_of_dense_speckle_only_fat_blobs_count():
    neighbours = [dense_speckle(2), cloudy(moved(6, 2), seed=3) | dense_speckle(4)]
    assert near_pieces(neighbours, (400, 400)).mean() > CLOUD_NEAR_MAX
    frame = cloudy(CLOUD_AT, METEOR, seed=1)
    mask = cloud_mask(frame, neighbours)
    assert mask[CLOUD_AT[1], CLOUD_AT[0]] == 255                          # the blob, near the neighbour's blob
    assert not mask[55:100, 245:325].any()                                # the meteor, near mere speckle, is kept


def test_a_candidate_made_by_clouds_changing_next_door_is_flagged_and_not_reported():
    decided = middle(cloudy(seed=1))
    assert (decided.flag, decided.detection, decided.label) == (CLOUD, False, "meteor")
    assert "cloud: clouds that change in an adjacent frame too" in detection_line(decided)
    assert middle(cloudy(seed=1), report_flagged=True).detection           # flagged, and reported on request
    assert middle(cloudy(seed=1), before=speckle(0)).flag == CLOUD         # one cloudy neighbour is enough


def test_the_cloud_check_keeps_what_clouds_do_not_explain():
    assert middle(cloudy(seed=1), cloud_check=False).detection              # the check off
    assert middle(cloudy(seed=1), rescore=None).detection                   # no model to ask again
    assert middle(cloudy(seed=1), before=speckle(0), after=speckle(2)).detection       # clear neighbours
    assert middle(cloudy(seed=1), before=cloudy((330, 320)), after=cloudy((330, 320), seed=2)).detection
    meteor = middle(cloudy(CLOUD_AT, METEOR, seed=1))                       # the model still sees the meteor
    assert (meteor.flag, meteor.detection) == ("", True)


def test_a_streak_or_a_faint_streak_keeps_a_cloudy_candidate():
    """The streak check's pieces guard a meteor the model scores only with the clouds around it."""
    streak, faint = streak_piece(METEOR, signal=12.0), streak_piece(METEOR, signal=7.0)
    assert streak.is_streak and faint.is_faint_streak
    for piece in (streak, faint):
        kept = middle(cloudy(seed=1), pieces=[piece])
        assert (kept.flag, kept.detection) == ("", True)
    speck = Piece(10, 10, 14, 10, 12, 10, 5.0, 10, 2.0, 12.0)               # noise: neither
    assert middle(cloudy(seed=1), pieces=[speck]).flag == CLOUD


def test_a_fireball_s_bright_streak_keeps_a_cloudy_candidate():
    """A fireball is wide: its trail is a blob the cloud mask could erase, and its streak piece is not thin."""
    fireball = Streak(330, 350, 440, 395, 2_000)                            # where the drawn blob lies, full frame
    kept = middle(cloudy(seed=1), bright=fireball)
    assert (kept.flag, kept.detection) == ("", True)
    assert "fireball" in kept.note


def test_the_satellite_check_goes_first_and_either_check_works_alone():
    satellite = [((40 + 70 * k, 300), (100 + 70 * k, 300)) for k in range(3)]
    frames = [cloudy(moved(-6), satellite[0]), cloudy(CLOUD_AT, satellite[1], seed=1),
              cloudy(moved(6, 2), satellite[2], seed=2)]
    crossing = middle(frames[1], before=frames[0], after=frames[2])
    assert crossing.flag == "satellite"                                   # its trail continues its neighbours'
    clouds_only = lambda diff: 0.99 if np.count_nonzero(diff == 255) >= 300 else 0.01    # the trail alone: low
    rising = middle(frames[1], before=cloudy(moved(-6)), after=frames[2], rescore=clouds_only)
    assert rising.flag == "satellite"             # the previous frame explains its clouds; the next, its trail
    assert middle(cloudy(seed=1), satellite_check=False).flag == CLOUD
    assert middle(frames[1], before=frames[0], after=frames[2], cloud_check=False).flag == "satellite"


def test_a_satellite_crossing_the_clouds_is_flagged_once_both_are_erased():
    """A candidate holding moving cloud and a satellite's streak that the next difference's piece explains: the
    streak no longer guards the frame, and is erased with the clouds. A streak nothing explains, or only its steady
    light (a meteor's short streak can read as steady), still keeps the frame."""
    frame = cloudy(CLOUD_AT, METEOR, seed=1)
    assert blob_model(cv2.ellipse(frame.copy(), CLOUD_AT, (32, 16), 20, 0, 360, 0, -1)) > 0.85   # the streak alone
    satellite, next_piece = streak_piece(METEOR), [streak_piece(((330, 100), (360, 115)))]
    flagged = middle(frame, pieces=[satellite], after_pieces=next_piece)
    assert (flagged.flag, flagged.detection) == (CLOUD, False)
    for kept in (middle(frame, pieces=[satellite]), middle(frame, pieces=[streak_piece(METEOR, steady=True)]),
                 middle(frame, before=speckle(0), after=speckle(2), pieces=[satellite], after_pieces=next_piece)):
        assert (kept.flag, kept.detection) == ("", True)     # unexplained; steady alone; no cloud next door


SKY_HEIGHT, SKY_WIDTH = 976, 1304
RAYS = [((300 + 90 * k, 820), (520 + 40 * k, 420)) for k in range(6)]       # frame pixels: rays on an arc, upwards
RAY_BLOB = (150, 200)                   # difference-image pixels, on the third ray
CALM_BLOB = (330, 80)                   # difference-image pixels, where no ray reaches


def sky(seed: int, rays: bool) -> np.ndarray:
    """A gray frame of sky at 40 DN (σ 3 DN noise); with `rays`, aurora rays that each take a new brightness
    (0–25 DN) every frame."""
    rng = np.random.default_rng(seed)
    layer = np.full((SKY_HEIGHT, SKY_WIDTH), 40.0, np.float32)
    if rays:
        light = np.zeros_like(layer)
        for start, end in RAYS:
            cv2.line(light, start, end, float(rng.uniform(0, 25)), 16)
        layer += cv2.GaussianBlur(light, (0, 0), 6)
    return np.clip(layer + rng.normal(0, 3, layer.shape), 0, 255).astype(np.uint8)


def blob_at(centre, seed: int) -> np.ndarray:
    """Speckle with one fat bright blob (a ray brightening, or a meteor the streak check found no streak in)."""
    image = speckle(seed)
    cv2.ellipse(image, centre, (14, 6), 60, 0, 360, 255, -1)
    return image


def after_sky(rays: bool, candidate: np.ndarray, dimming_dn: float = 0.0, gap: bool = False,
              **options) -> FrameResult:
    """The candidate (frame 4, scored 0.99, `candidate` its difference image) decided after four frames of a sky
    with or without pulsating rays, darkening by `dimming_dn` a frame (dusk), with `gap` frame 3 paired with frame
    1 (the one between them bad); its neighbours' differences hold speckle alone (nothing they explain)."""
    frames = [np.clip(sky(seed, rays).astype(np.float32) - dimming_dn * seed, 0, 255).astype(np.uint8)
              for seed in range(6)]
    results = []
    for index in range(6):
        shrunk = (lightning.shrunk(frames[index]), lightning.shrunk(frames[index - 1])) if index else None
        previous = frame_result(index - (2 if index == 3 and gap else 1), 0).file if index else None
        results.append(frame_result(index, 0.99 if index == 4 else 0.02, candidate if index == 4 else speckle(index),
                                    previous=previous, shrunk=shrunk))
    return decide_in_order(results, **{"rescore": blob_model, **options})[4]


def test_the_restless_sky_is_where_the_earlier_frames_changed_and_only_pieces_there_are_erased():
    rays = [lightning.shrunk(sky(seed, True)) for seed in range(3)]
    restless = restless_mask(rays, (400, 400))
    assert restless[RAY_BLOB[1], RAY_BLOB[0]] == 255 and not restless[CALM_BLOB[1], CALM_BLOB[0]]
    assert not restless_blocks([lightning.shrunk(sky(seed, False)) for seed in range(3)]).any()     # a calm sky
    diff = blob_at(RAY_BLOB, 1)
    cv2.ellipse(diff, CALM_BLOB, (14, 6), 60, 0, 360, 255, -1)
    speck = (RAY_BLOB[0] + 30, RAY_BLOB[1] - 20)
    assert restless[speck[1], speck[0]] == 255
    diff[speck[1]:speck[1] + 2, speck[0]:speck[0] + 3] = 255             # a speck (6 px) in the restless sky
    erased = restless_pieces(diff, rays)
    assert erased[RAY_BLOB[1], RAY_BLOB[0]] == 255                        # the ray's piece
    assert not erased[CALM_BLOB[1], CALM_BLOB[0]] and not erased[speck[1], speck[0]]     # not a speck, nor elsewhere


def test_a_candidate_after_a_restless_sky_is_flagged_cloud_and_the_same_blob_after_a_calm_one_is_kept():
    """The neighbours explain neither (no piece of theirs lies near); the same model score (0.99) both times; the
    model stand-in (`blob_model`) sees a meteor while one blob is left."""
    aurora = after_sky(True, blob_at(RAY_BLOB, 1))
    assert (aurora.flag, aurora.detection, aurora.label) == (CLOUD, False, "meteor")
    meteor = after_sky(False, blob_at(RAY_BLOB, 1))
    assert (meteor.flag, meteor.detection) == ("", True)
    both = blob_at(RAY_BLOB, 1)
    cv2.ellipse(both, CALM_BLOB, (14, 6), 60, 0, 360, 255, -1)
    beside = after_sky(True, both)                                      # a meteor beside the aurora: kept
    assert (beside.flag, beside.detection) == ("", True)
    assert after_sky(True, blob_at(RAY_BLOB, 1), cloud_check=False).detection           # the check off
    assert after_sky(True, blob_at(RAY_BLOB, 1), gap=True).detection     # its earlier frames not in a row: not asked


def test_a_sky_changing_as_a_whole_is_not_restless():
    """At dusk the sky darkened 1.5 DN a frame, every block ranged over 3 DN, and a meteor the streak check found no
    streak in was erased with the 'aurora' and flagged: each frame's change over the whole sky is taken out first."""
    assert not restless_blocks([lightning.shrunk(sky(seed, False)) - seed for seed in range(3)]).any()
    lens = np.zeros((SKY_HEIGHT, SKY_WIDTH), np.uint8)
    cv2.circle(lens, (SKY_WIDTH // 2, SKY_HEIGHT // 2), SKY_HEIGHT // 2 + 100, 1, -1)    # black around the lens
    assert not restless_blocks([lightning.shrunk((sky(seed, False) - 2 * seed) * lens) for seed in range(3)]).any()
    meteor = after_sky(False, blob_at(RAY_BLOB, 1), dimming_dn=1.5)
    assert (meteor.flag, meteor.detection) == ("", True)
    aurora = after_sky(True, blob_at(RAY_BLOB, 1), dimming_dn=1.5)
    assert aurora.flag == CLOUD
