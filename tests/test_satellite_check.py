"""The cross-frame satellite/plane check on drawn difference images, through the Decider the client uses, and on a
simulated night with ground truth."""
from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from gualta import allsky
from gualta.detect import SHARED_NOTE, Decider, FrameResult, run_batch, scorer_for
from gualta.frames import NightFrames
from gualta.scores import read_scores
from gualta.streak import Piece
from gualta.trails import Trail, component_points, continues, find_trails, lines_of
from helpers_client import (DECIDER_START, along_line, decide_in_order, explained_away, frame_result, settings, speckle,
                            streak_piece)


def diff_with(*segments, seed: int = 0, dotted: bool = False) -> np.ndarray:
    image = speckle(seed)
    for (x1, y1), (x2, y2) in segments:
        if dotted:                                     # a plane's strobe: dots every 6 px
            for t in np.linspace(0, 1, int(np.hypot(x2 - x1, y2 - y1) / 6) + 1):
                cv2.circle(image, (int(x1 + t * (x2 - x1)), int(y1 + t * (y2 - y1))), 1, 255, -1)
        else:
            cv2.line(image, (x1, y1), (x2, y2), 255, 2)
    return image


def drawn_lines_model(diff: np.ndarray) -> float:
    """A stand-in for the model on drawn images: p(meteor) high while any drawn (255) line of 20+ pixels is left."""
    return 0.99 if np.count_nonzero(diff == 255) >= 20 else 0.01


def decide(*diffs_and_scores, **options) -> list[FrameResult]:
    return decide_in_order([frame_result(index, score, diff) for index, (diff, score) in enumerate(diffs_and_scores)],
                           **options)


def test_trails_are_found_where_they_are_drawn():
    found = find_trails(diff_with(((100, 100), (180, 140))))
    assert len(found) == 1
    assert np.allclose(sorted(found[0].ends.tolist()), [[100, 100], [180, 140]], atol=3)
    assert find_trails(speckle(1)) == []


def test_component_points_are_each_label_s_pixels_in_raster_order():
    count, labels = cv2.connectedComponents(speckle(3), connectivity=8)
    groups = component_points(labels, count)
    assert count > 10 and len(groups) == count - 1
    for label, points in enumerate(groups, start=1):
        ys, xs = np.nonzero(labels == label)
        assert np.array_equal(points, np.column_stack([xs, ys]))
    assert component_points(np.zeros((5, 5), np.int32), 1) == []


def test_continuation_geometry():
    piece = Trail(100, 100, 160, 130)
    assert continues(piece, Trail(170, 135, 230, 165))                # next piece, small gap
    assert continues(piece, Trail(40, 70, 95, 97))                    # previous piece
    assert not continues(piece, Trail(170, 175, 230, 205))            # parallel, 40 px aside
    assert not continues(piece, Trail(170, 135, 200, 195))            # different direction
    assert not continues(piece, Trail(350, 260, 390, 280))            # same line, far away


def test_a_satellite_across_three_frames_is_flagged_throughout():
    frames = [diff_with(((40 + 70 * k, 60 + 35 * k), (100 + 70 * k, 90 + 35 * k)), seed=k) for k in range(3)]
    decided = decide(*[(frame, 0.99) for frame in frames])
    assert [r.flag for r in decided] == ["satellite"] * 3 and not any(r.detection for r in decided)


def test_a_plane_dotted_trail_is_flagged():
    frames = [diff_with(((300 - 60 * k, 50 + 40 * k), (250 - 60 * k, 83 + 40 * k)), seed=k, dotted=True)
              for k in range(2)]
    assert [r.flag for r in decide(*[(frame, 0.95) for frame in frames])] == ["satellite", "satellite"]


def test_two_meteors_in_consecutive_frames_are_both_reported():
    first = diff_with(((100, 100), (160, 130)))
    second = diff_with(((250, 300), (280, 240)), seed=1)              # elsewhere, another direction
    decided = decide((first, 0.99), (second, 0.99))
    assert [(r.flag, r.detection) for r in decided] == [("", True), ("", True)]


def test_a_meteor_beside_a_satellite_is_not_hidden():
    satellite = [((40 + 70 * k, 300), (100 + 70 * k, 300)) for k in range(3)]
    meteor = ((200, 60), (230, 140))
    frames = [diff_with(satellite[0]), diff_with(satellite[1], meteor, seed=1), diff_with(satellite[2], seed=2)]
    decided = decide(*[(frame, 0.99) for frame in frames])
    assert [r.flag for r in decided] == ["satellite", "", "satellite"] and decided[1].detection


def test_flagged_ones_are_reported_when_asked_and_streaks_are_in_frame_pixels():
    frames = [diff_with(((40 + 70 * k, 60 + 35 * k), (100 + 70 * k, 90 + 35 * k)), seed=k) for k in range(2)]
    decided = decide(*[(frame, 0.99) for frame in frames], report_flagged=True)
    assert all(r.flag == "satellite" and r.detection for r in decided)
    x1, y1, x2, y2 = decided[0].streak
    assert abs(min(x1, x2) - 40 * 1304 / 400) < 15 and abs(max(y1, y2) - 90 * 976 / 400) < 15


def test_low_scores_are_never_flagged_and_skipped_frames_keep_their_place():
    satellite = [diff_with(((40 + 70 * k, 60), (100 + 70 * k, 60)), seed=k) for k in range(3)]
    decider = Decider(0.85)
    skipped = FrameResult(Path(allsky.frame_name(DECIDER_START + timedelta(seconds=45))), note="bad frame",
                          flag="skipped")
    out = decider.push(frame_result(0, 0.99, satellite[0]))            # waits for its successor
    out += decider.push(skipped)
    out += decider.push(frame_result(2, 0.10, satellite[1]))
    out += decider.push(frame_result(3, 0.99, satellite[2])) + decider.finish()
    assert [r.file.name[14:20] for r in out] == ["220000", "220045", "220100", "220130"]
    assert [r.flag for r in out] == ["satellite", "skipped", "", "satellite"]
    assert [r.label for r in out] == ["meteor", "", "no-meteor", "meteor"]


def test_a_score_at_the_threshold_is_a_detection():
    """guAlta_threshold is the lowest score reported (the thesis: p ≥ 0.85): read as 'above', a meteor the model
    scored exactly at it would go unreported."""
    meteor = diff_with(((120, 80), (260, 150)), seed=1)
    decided = decide((speckle(0), 0.1), (meteor, 0.85), (speckle(2), np.nextafter(0.85, 0)))
    assert [(r.label, r.detection) for r in decided] == [("no-meteor", False), ("meteor", True), ("no-meteor", False)]


def test_the_settings_give_the_decider_and_the_scorer_each_check_as_set(tmp_path):
    checks = ("satellite_check", "report_flagged", "fireball_check", "streak_check", "cloud_check", "lightning_check")
    defaults = Decider(0.85)
    for flipped in checks:
        chosen = settings(tmp_path, tmp_path / "model.onnx", threshold=0.5, batch_size=3,
                          **{flipped: not getattr(defaults, flipped)})
        decider = Decider.from_settings(chosen, model=None)
        assert decider.threshold == 0.5 and decider.rescore is not None
        assert {name: getattr(decider, name) for name in checks} == {name: getattr(chosen, name) for name in checks}
        scorer = scorer_for(chosen, None, NightFrames([]))
        assert (scorer.batch_size, scorer.streak_check) == (3, chosen.streak_check)
    for faint in (True, False):                     # step 5 reads frames only when it is on
        chosen = settings(tmp_path, tmp_path / "model.onnx", faint_crossing_check=faint)
        assert (Decider.from_settings(chosen, model=None).read_gray is not None) == faint
    with pytest.raises(TypeError):                  # a check's flag by position would be read as another's
        Decider(0.85, False)


def test_on_a_simulated_night_flags_fall_on_satellites_and_planes(client_night, tiny_model, tmp_path):
    run_batch(settings(tmp_path, tiny_model, threshold=0.0), client_night, tmp_path / "s.csv", upload=False,
              say=lambda line: None, progress=False)
    truth = pd.read_csv(client_night / "ground_truth.csv").set_index("file")
    flagged = [row["file"] for row in read_scores(tmp_path / "s.csv") if row["flag"] == "satellite"]
    assert flagged
    events = [str(truth.loc[name, "events"]) for name in flagged]
    assert all("satellite" in e or "plane" in e for e in events), list(zip(flagged, events))


SATELLITE_TWO_BACK, SATELLITE_NOW = ((40, 300), (100, 300)), ((160, 300), (220, 300))   # its piece of 1 hidden


def test_a_satellite_clouds_hid_in_the_previous_frame_is_flagged_by_the_one_before_it():
    def frame_two(two_back: np.ndarray) -> FrameResult:
        return decide((two_back, 0.10), (speckle(1), 0.10), (diff_with(SATELLITE_NOW, seed=2), 0.99),
                      (speckle(3), 0.10), rescore=drawn_lines_model)[2]

    assert (frame_two(diff_with(SATELLITE_TWO_BACK)).flag, frame_two(diff_with(SATELLITE_TWO_BACK)).detection) == (
        "satellite", False)
    assert (frame_two(speckle(0)).flag, frame_two(speckle(0)).detection) == ("", True)
    elsewhere = frame_two(diff_with(((300, 40), (330, 120))))        # a trail on another line two back
    assert (elsewhere.flag, elsewhere.detection) == ("", True)


def test_the_frame_two_back_is_not_read_across_a_long_gap_nor_with_the_satellite_check_off():
    two_back, now = diff_with(SATELLITE_TWO_BACK), diff_with(SATELLITE_NOW, seed=2)
    frames = [frame_result(0, 0.10, two_back), frame_result(1, 0.10, speckle(1)), frame_result(30, 0.99, now),
              frame_result(31, 0.10, speckle(3))]
    late = decide_in_order(frames, rescore=drawn_lines_model)[2]          # 15 min after frame 0
    assert (late.flag, late.detection) == ("", True)
    off = decide((two_back, 0.10), (speckle(1), 0.10), (now, 0.99), (speckle(3), 0.10), rescore=drawn_lines_model,
                 satellite_check=False, cloud_check=False)[2]
    assert (off.flag, off.detection) == ("", True)


def test_a_static_structure_neither_hides_a_meteor_nor_blocks_a_flag():
    static = ((300, 300), (360, 330))                                  # e.g. a cloud edge lit the same way
    satellite = [((40 + 70 * k, 60 + 35 * k), (100 + 70 * k, 90 + 35 * k)) for k in range(2)]
    crossing = decide((diff_with(satellite[0], static), 0.99), (diff_with(satellite[1], static, seed=1), 0.99))
    assert [r.flag for r in crossing] == ["satellite", "satellite"]
    meteor = ((150, 200), (170, 260))
    only_static = decide((diff_with(static), 0.99), (diff_with(static, meteor, seed=1), 0.99))
    assert [(r.flag, r.detection) for r in only_static] == [("", True), ("", True)]


SATELLITE_PIECE = ((40, 60), (100, 90))
SHORT_CONTINUATION = ((110, 95), (122, 101))      # 13 px: too short for a trail of its own
METEOR = ((200, 60), (230, 140))


def test_a_piece_on_a_neighbour_s_line_is_erased_and_a_meteor_beside_it_kept():
    neighbour = lines_of(diff_with(SATELLITE_PIECE))
    frame = diff_with(SHORT_CONTINUATION, METEOR, seed=1)
    assert find_trails(diff_with(SHORT_CONTINUATION, seed=1)) == []
    erased = explained_away(frame, neighbour)
    assert erased is not None
    assert erased[98, 116] == 0 and frame[98, 116] == 255                    # the continuation is gone
    assert np.array_equal(erased[60:141, 195:236], frame[60:141, 195:236])    # the meteor is untouched
    assert explained_away(diff_with(METEOR, seed=1), neighbour) is None        # nothing on the line: nothing erased
    aside = ((110, 135), (122, 141))                                         # the same piece 40 px off the line
    assert explained_away(diff_with(aside, seed=1), neighbour) is None


def test_explaining_away_flags_a_crossing_the_trail_geometry_misses():
    frames = [(diff_with(SATELLITE_PIECE), 0.99), (diff_with(SHORT_CONTINUATION, seed=1), 0.99)]
    assert [r.flag for r in decide(*frames)] == ["", ""]                      # geometry alone: reported
    assert [r.flag for r in decide(*frames, rescore=drawn_lines_model)] == ["satellite", "satellite"]


def test_explaining_away_keeps_a_meteor_that_shares_the_frame():
    frames = [(diff_with(SATELLITE_PIECE), 0.99), (diff_with(SHORT_CONTINUATION, METEOR, seed=1), 0.99)]
    decided = decide(*frames, rescore=drawn_lines_model)
    assert [(r.flag, r.detection) for r in decided] == [("satellite", False), ("", True)]


def test_explaining_away_leaves_two_meteors_in_consecutive_frames_alone():
    first, second = diff_with(((100, 100), (160, 130))), diff_with(((250, 300), (280, 240)), seed=1)
    decided = decide((first, 0.99), (second, 0.99), rescore=drawn_lines_model)
    assert [(r.flag, r.detection) for r in decided] == [("", True), ("", True)]


def test_a_twin_piece_far_along_a_neighbour_s_line_is_erased():
    """A short exposure (a moonlit night) leaves a gap of several times the pieces' length between them."""
    neighbour = lines_of(diff_with(along_line(0, 20)))
    twin = diff_with(along_line(100, 18), seed=1)                  # 80 px on: 4× the length
    erased = explained_away(twin, neighbour)
    assert erased is not None and not (erased == 255).any() and (twin == 255).any()
    assert explained_away(diff_with(along_line(100, 18, aside=6), seed=1), neighbour) is None   # off the line
    assert explained_away(diff_with(along_line(100, 8), seed=1), neighbour) is None             # not its twin


def test_a_meteor_only_partly_in_a_satellite_s_continuation_is_kept():
    """A meteor running 5 px beside a satellite's line, a third of it outside the line's continuation zone, is no
    piece of the satellite's (with the share it needs lowered to 56 % it was erased and missed)."""
    neighbour = lines_of(diff_with(along_line(0, 20)))
    assert explained_away(diff_with(along_line(20, 70, aside=5), seed=1), neighbour) is None
    assert explained_away(diff_with(along_line(20, 70), seed=1), neighbour) is not None     # on the line: erased


def test_a_speck_on_a_meteor_s_line_does_not_explain_it():
    """A neighbour's piece that the candidate's own line reaches explains it only when at least a third as long, or
    cut short by the image's edge."""
    meteor = diff_with(along_line(0, 90), seed=1)
    speck = lines_of(diff_with(along_line(130, 9)))                # 40 px beyond the meteor's end, on its line
    assert any(line.points is not None and line.trail.length < 30 for line in speck)
    assert explained_away(meteor, speck) is None
    satellite = lines_of(diff_with(along_line(130, 30)))           # a satellite's next piece, shortened by clouds
    erased = explained_away(meteor, satellite)
    assert erased is not None and not (erased == 255).any()
    crossing = diff_with(((240, 320), (320, 360)), seed=1)           # 89 px, then 20 px cut short by the image's edge
    leaving = lines_of(diff_with(((380, 390), (398, 399))))
    assert explained_away(crossing, leaving) is not None
    assert explained_away(crossing, lines_of(diff_with(((340, 370), (358, 379))))) is None     # the same, inside


def test_a_moonlit_satellite_of_short_pieces_is_flagged():
    frames = [(diff_with(along_line(79 * k, 14), seed=k), 0.99) for k in range(3)]
    assert [r.flag for r in decide(*frames)] == ["", "", ""]                  # too short for trail geometry
    assert [r.flag for r in decide(*frames, rescore=drawn_lines_model)] == ["satellite"] * 3


def steady_piece(segment) -> Piece:
    return streak_piece(segment, steady=True)


def test_a_satellite_seen_in_one_frame_only_is_erased_by_its_steady_light():
    def night(*segments, steady=True, **options) -> FrameResult:
        pieces = [steady_piece(SATELLITE_PIECE)] if steady else []
        middle = frame_result(1, 0.99, diff_with(*segments, seed=1), pieces=pieces)
        return decide_in_order([frame_result(0, 0.02, speckle(0)), middle, frame_result(2, 0.02, speckle(2))],
                               **options)[1]

    alone = night(SATELLITE_PIECE, rescore=drawn_lines_model)
    assert (alone.flag, alone.detection) == ("satellite", False)
    assert night(SATELLITE_PIECE, steady=False, rescore=drawn_lines_model).detection     # no light curve: reported
    assert night(SATELLITE_PIECE).detection                                 # no model to ask again: reported
    shared = night(SATELLITE_PIECE, METEOR, rescore=drawn_lines_model)
    assert (shared.flag, shared.detection) == ("", True)                    # a meteor beside it: reported


def test_a_steady_streak_is_erased_with_its_margin():
    frame = diff_with(SATELLITE_PIECE, METEOR, seed=1)
    erased = explained_away(frame, [], [Trail(*SATELLITE_PIECE[0], *SATELLITE_PIECE[1])])
    assert erased is not None and (frame[55:96, 35:106] == 255).any()
    assert not (erased[55:96, 35:106] == 255).any()                               # the satellite is gone
    assert np.array_equal(erased[60:141, 195:236], frame[60:141, 195:236])        # the meteor is untouched
    assert explained_away(frame, [], []) is None


def test_a_long_bright_streak_no_adjacent_piece_explains_is_not_erased_with_what_trails_explain():
    """A cloudy neighbour's dozens of trails can continue a meteor's by chance. A streak 24 px or longer at 10 × the
    noise or more that no adjacent piece explains keeps its frame; the same streak is flagged once the adjacent
    frames hold the crossing's own pieces, and a fainter one is still erased with what the trails explain."""
    satellite = [((40 + 70 * k, 300), (100 + 70 * k, 300)) for k in range(3)]

    def middle(own: Piece, adjacent: bool) -> FrameResult:
        frames = [frame_result(0, 0.99, diff_with(satellite[0]), pieces=[streak_piece(satellite[0])] * adjacent),
                  frame_result(1, 0.99, diff_with(satellite[1], seed=1), pieces=[own]),
                  frame_result(2, 0.99, diff_with(satellite[2], seed=2), pieces=[streak_piece(satellite[2])] * adjacent)]
        return decide_in_order(frames)[1]

    bright = streak_piece(satellite[1])
    assert bright.is_long_and_bright
    kept = middle(bright, adjacent=False)
    assert (kept.flag, kept.detection, kept.streak) == ("", True, bright.ends)
    assert middle(bright, adjacent=True).flag == "satellite"
    assert middle(streak_piece(satellite[1], signal=9.0), adjacent=False).flag == "satellite"


SMALL_METEOR = ((200, 60), (202, 64))             # 4 px: no trail, and too little for the stand-in model alone


def test_a_meteor_too_small_for_the_model_keeps_its_frame_beside_a_crossing_satellite():
    """The streak check's piece of a meteor that no neighbour explains keeps a frame the satellite check would flag:
    the trail geometry (a satellite continuing its neighbours') and explaining away (the satellite erased, the model
    no longer sees the small meteor) both explain the satellite only."""
    satellite = [((40 + 70 * k, 300), (100 + 70 * k, 300)) for k in range(3)]
    assert find_trails(diff_with(SMALL_METEOR)) == []

    def middle_of_crossing(*pieces, **options) -> FrameResult:
        frames = [frame_result(0, 0.99, diff_with(satellite[0])),
                  frame_result(1, 0.99, diff_with(satellite[1], SMALL_METEOR, seed=1), pieces=list(pieces)),
                  frame_result(2, 0.99, diff_with(satellite[2], seed=2))]
        return decide_in_order(frames, **options)[1]

    meteor, on_satellite = streak_piece(SMALL_METEOR), streak_piece(satellite[1], signal=9.0)
    assert middle_of_crossing(on_satellite).flag == "satellite"          # its own streak lies where it is explained
    kept = middle_of_crossing(on_satellite, meteor)
    assert (kept.flag, kept.detection, kept.note) == ("", True, SHARED_NOTE)
    assert kept.streak == meteor.ends                                    # the report marks the meteor
    quiet_two_back = [frame_result(-1, 0.02, speckle(5)), frame_result(0, 0.99, diff_with(satellite[0])),
                      frame_result(1, 0.99, diff_with(satellite[1], SMALL_METEOR, seed=1),
                                   pieces=[on_satellite, meteor]),
                      frame_result(2, 0.99, diff_with(satellite[2], seed=2))]
    still_kept = decide_in_order(quiet_two_back)[2]                      # the frame two back explains nothing
    assert (still_kept.flag, still_kept.note, still_kept.streak) == ("", SHARED_NOTE, meteor.ends)
    assert middle_of_crossing(on_satellite, dataclasses.replace(meteor, steady=True)).flag == "satellite"

    def beside_steady_satellite(*pieces) -> FrameResult:
        middle = frame_result(1, 0.99, diff_with(SATELLITE_PIECE, SMALL_METEOR, seed=1), pieces=list(pieces))
        return decide_in_order([frame_result(0, 0.02, speckle(0)), middle, frame_result(2, 0.02, speckle(2))],
                               rescore=drawn_lines_model)[1]

    assert beside_steady_satellite(steady_piece(SATELLITE_PIECE)).flag == "satellite"
    alone_in_its_frame = beside_steady_satellite(steady_piece(SATELLITE_PIECE), meteor)
    assert (alone_in_its_frame.flag, alone_in_its_frame.detection) == ("", True)
    explained_by_neighbour = decide_in_order(
        [frame_result(0, 0.02, speckle(0), pieces=[meteor]),                # a flickering light at the same spot
         frame_result(1, 0.99, diff_with(SATELLITE_PIECE, SMALL_METEOR, seed=1),
                      pieces=[steady_piece(SATELLITE_PIECE), meteor]),
         frame_result(2, 0.02, speckle(2))], rescore=drawn_lines_model)[1]
    assert explained_by_neighbour.flag == "satellite"


def test_a_reported_model_candidate_marks_its_own_streak_not_the_longer_crossing_beside_it():
    """A meteor's frame kept beside a satellite reports the meteor's streak (`Decider.own_streak`), not the longest
    trail of its difference image (the satellite's): a streak that no adjacent piece explains, else such a faint
    streak with a trail along it, never one whose own light tells a crossing; as the trail along it where there is
    one."""
    satellite = [((40 + 70 * k, 300), (100 + 70 * k, 300)) for k in range(3)]
    meteor_segment = ((200, 150), (225, 165))
    meteor, crossing = streak_piece(meteor_segment), streak_piece(satellite[1], signal=9.0)
    frames = [frame_result(0, 0.99, diff_with(satellite[0]), pieces=[streak_piece(satellite[0])]),
              frame_result(1, 0.99, diff_with(satellite[1], meteor_segment, seed=1), pieces=[crossing, meteor]),
              frame_result(2, 0.99, diff_with(satellite[2], seed=2), pieces=[streak_piece(satellite[2])])]
    kept = decide_in_order(frames)[1]
    hidden_next_door = [frames[0], frame_result(1, 0.02, speckle(1)),                 # clouds hid the satellite
                        frame_result(2, 0.99, diff_with(satellite[2], meteor_segment, seed=1),
                                     pieces=[streak_piece(satellite[2], signal=9.0), meteor]),
                        frame_result(3, 0.02, speckle(3))]
    two_back = decide_in_order(hidden_next_door)[2]                   # the frame two back explains the satellite
    assert (two_back.flag, two_back.detection) == ("", True) and np.allclose(two_back.streak, meteor.ends, atol=4)
    trails_in_frame = [trail.in_frame(1304, 976) for trail in kept.trails]
    assert len(trails_in_frame) == 2
    assert trails_in_frame[0] == find_trails(diff_with(satellite[1]))[0].in_frame(1304, 976)   # the satellite's
    assert (kept.flag, kept.detection) == ("", True)
    assert kept.streak == trails_in_frame[1] and np.allclose(kept.streak, meteor.ends, atol=4)    # the meteor's trail

    def beside_steady_satellite(*pieces, drawn=()) -> FrameResult:
        return decide_in_order([frame_result(0, 0.02, speckle(0)),
                                frame_result(1, 0.99, diff_with(SATELLITE_PIECE, *drawn, seed=1), pieces=list(pieces)),
                                frame_result(2, 0.02, speckle(2))])[1]

    longest_trail = find_trails(diff_with(SATELLITE_PIECE, seed=1))[0].in_frame(1304, 976)
    faint_meteor = streak_piece(meteor_segment, signal=7.0)
    assert faint_meteor.is_faint_streak and not faint_meteor.is_streak
    faint_kept = beside_steady_satellite(steady_piece(SATELLITE_PIECE), faint_meteor, drawn=[meteor_segment])
    assert faint_kept.detection and np.allclose(faint_kept.streak, faint_meteor.ends, atol=4)
    assert beside_steady_satellite(steady_piece(SATELLITE_PIECE), faint_meteor).streak == longest_trail  # no trail
    alone = beside_steady_satellite(steady_piece(SATELLITE_PIECE), meteor)        # no trail: the streak's own ends
    assert alone.streak == meteor.ends
    assert beside_steady_satellite(steady_piece(SATELLITE_PIECE)).streak == longest_trail           # as before


def test_a_streak_an_adjacent_piece_explains_is_erased_like_a_steady_one():
    """A satellite too faint in the neighbour's 400×400 difference for a line there, seen by the streak check in both
    frames: the candidate's streak continuing the neighbour's piece is erased before the model is asked again."""
    satellite, further_along = streak_piece(SATELLITE_PIECE), streak_piece(((110, 95), (170, 125)))

    def middle(*segments) -> FrameResult:
        frames = [frame_result(0, 0.02, speckle(0)),
                  frame_result(1, 0.99, diff_with(*segments, seed=1), pieces=[satellite]),
                  frame_result(2, 0.02, speckle(2), pieces=[further_along])]
        return decide_in_order(frames, rescore=drawn_lines_model)[1]

    assert (middle(SATELLITE_PIECE).flag, middle(SATELLITE_PIECE).detection) == ("satellite", False)
    assert middle(SATELLITE_PIECE, METEOR).detection                        # a meteor beside it: reported
    faint = dataclasses.replace(satellite, signal=7.0)                      # 6–8 × the noise: a faint streak
    assert faint.is_faint_streak
    fainter = decide_in_order([frame_result(0, 0.02, speckle(0)),
                               frame_result(1, 0.99, diff_with(SATELLITE_PIECE, seed=1), pieces=[faint]),
                               frame_result(2, 0.02, speckle(2), pieces=[further_along])], rescore=drawn_lines_model)[1]
    assert (fainter.flag, fainter.detection) == ("satellite", False)        # erased as well
    unexplained = decide_in_order([frame_result(0, 0.02, speckle(0)),
                                   frame_result(1, 0.99, diff_with(SATELLITE_PIECE, seed=1), pieces=[satellite]),
                                   frame_result(2, 0.02, speckle(2))], rescore=drawn_lines_model)[1]
    assert (unexplained.flag, unexplained.detection) == ("", True)          # nothing explains it: reported


def test_a_plane_s_light_evenly_spaced_across_three_frames_is_erased():
    """Under a short exposure a slow plane's light is a round dot in each frame: no trail, no streak, but the dots lie
    evenly spaced along its path, so the candidate's dot is erased before the model is asked again."""
    def dot_at(x: int, y: int) -> Piece:
        return dataclasses.replace(streak_piece(((x - 2, y), (x + 2, y))), area=60)      # round: not thin

    def with_dot(x: int, y: int, seed: int) -> np.ndarray:
        return cv2.circle(speckle(seed), (x, y), 3, 255, -1)

    path = [(150, 180), (200, 200), (250, 220)]
    assert not dot_at(*path[1]).is_thin and find_trails(with_dot(*path[1], 1)) == []

    def middle(*pieces_before_and_after) -> FrameResult:
        frames = [frame_result(k, 0.99 if k == 1 else 0.02, with_dot(*path[k], k), pieces=pieces)
                  for k, pieces in enumerate([pieces_before_and_after[0], [dot_at(*path[1])], pieces_before_and_after[1]])]
        return decide_in_order(frames, rescore=drawn_lines_model)[1]

    plane = middle([dot_at(*path[0])], [dot_at(*path[2])])
    assert (plane.flag, plane.detection) == ("satellite", False)
    off_path = middle([dot_at(*path[0])], [dot_at(270, 260)])
    assert (off_path.flag, off_path.detection) == ("", True)
    assert middle([dot_at(*path[0])], []).detection                       # one neighbour's dot: no track


def test_a_satellite_s_short_dash_is_erased_when_an_adjacent_frame_holds_the_next_one():
    """Under a 3–4 s exposure a satellite leaves a short, roundish dash in each frame: too round for a streak and too
    short for a trail, so only an adjacent frame's dash alike, further along its line, explains it."""
    def dash_at(start, end) -> Piece:
        piece = streak_piece((start, end))
        return dataclasses.replace(piece, area=round(piece.length ** 2 / 3.5))

    def with_dash(start, end, seed: int) -> np.ndarray:
        return cv2.line(speckle(seed), start, end, 255, 3)

    here, next_one = ((200, 200), (204, 206)), ((220, 230), (224, 236))
    assert not dash_at(*here).is_streak and find_trails(with_dash(*here, 1)) == []

    def candidate(after: list[Piece]) -> FrameResult:
        frames = [frame_result(0, 0.02, speckle(0)),
                  frame_result(1, 0.99, with_dash(*here, 1), pieces=[dash_at(*here)]),
                  frame_result(2, 0.02, with_dash(*next_one, 2), pieces=after)]
        return decide_in_order(frames, rescore=drawn_lines_model)[1]

    satellite = candidate([dash_at(*next_one)])
    assert (satellite.flag, satellite.detection) == ("satellite", False)
    assert candidate([]).detection                                     # nothing follows it: reported
    assert candidate([dash_at((220, 200), (224, 206))]).detection      # a dash beside its line: reported
