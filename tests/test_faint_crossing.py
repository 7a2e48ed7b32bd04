"""Step 5 of the satellite check: a line too faint for any piece, going on along its line in an adjacent frame."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from gualta import faint_crossing
from gualta.classical import estimate_sky_mask
from gualta.detect import Decider
from gualta.preprocess import binary_difference, resize_area
from helpers_client import frame_result, streak_piece

WIDTH, HEIGHT = 1304, 976
START = np.array([420.0, 330.0])
DIRECTION = np.array([2.0, 1.0]) / np.sqrt(5)
NORMAL = np.array([-1.0, 2.0]) / np.sqrt(5)
FAINT_DN = 6.0                  # 2 × the camera noise: no piece, no faint line of the 400×400 difference


def segment(start: float, end: float, aside: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Ends of a stretch of the test line (from START along DIRECTION), `aside` px off it."""
    return tuple(START + t * DIRECTION + aside * NORMAL for t in (start, end))


def night(lines: dict[int, list], frames: int = 4, seed: int = 3) -> list[np.ndarray]:
    """Gray frames of an all-sky camera (a lit circle, 3 DN noise) with faint 2 px lines: {frame: [segment]}, each
    FAINT_DN bright unless a third item says how bright."""
    rng = np.random.default_rng(seed)
    sky = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.circle(sky, (WIDTH // 2, HEIGHT // 2), 470, 255, -1)
    out = []
    for index in range(frames):
        frame = np.where(sky > 0, 40.0, 3.0) + rng.normal(0, 3.0, sky.shape)
        for a, b, *brightness in lines.get(index, []):
            drawn = np.zeros(sky.shape, np.uint8)
            cv2.line(drawn, tuple(int(v) for v in a.round()), tuple(int(v) for v in b.round()), 1, 2)
            frame += (brightness[0] if brightness else FAINT_DN) * drawn
        out.append(np.clip(frame.round(), 0, 255).astype(np.uint8))
    return out


def explained(frames: list[np.ndarray]) -> list[faint_crossing.Line]:
    """The lines of frame 2's difference that frame 1's and frame 3's differences explain."""
    return faint_crossing.explained_lines(frames[2], frames[1], [(frames[1], frames[0]), (frames[3], frames[2])])


SATELLITE = {1: [segment(-140, -20)], 2: [segment(0, 120)], 3: [segment(140, 260)]}


def near_line(line: faint_crossing.Line, a: np.ndarray, b: np.ndarray, slack: float = 6.0) -> bool:
    return all(min(np.hypot(*(np.array(end) - a)), np.hypot(*(np.array(end) - b))) <= slack + 15 for end in line.ends)


def test_a_faint_satellite_going_on_in_both_neighbours_is_explained():
    frames = night(SATELLITE)
    found = explained(frames)
    assert len(found) == 1
    assert near_line(found[0], *segment(0, 120))
    assert found[0].z >= faint_crossing.LINE_Z


def test_a_faint_satellite_seen_in_one_neighbour_only_is_explained():
    frames = night({2: [segment(0, 120)], 3: [segment(140, 260)]})
    assert len(explained(frames)) == 1


def test_a_faint_meteor_alone_is_not_explained():
    frames = night({2: [segment(0, 120)]})
    sky = estimate_sky_mask(frames)
    own = faint_crossing.lines_of(faint_crossing.signal(frames[2], frames[1], sky), sky)
    assert own and near_line(own[0], *segment(0, 120))          # the search sees it ...
    assert explained(frames) == []                              # ... and nothing goes on along its line


def test_a_line_beside_its_extension_does_not_explain_it():
    """The next frame's line runs parallel, 30 px aside: another object (a second satellite), not this one."""
    frames = night({2: [segment(0, 120)], 3: [segment(140, 260, aside=30)]})
    assert explained(frames) == []


def test_a_line_more_lit_beside_its_extension_leaves_it_unexplained():
    """The next frame is lit along the extension and more 25 px aside (clutter, a band of lines): no sign that the
    light on the extension is this object's."""
    for seed in (1, 3, 5):
        frames = night({2: [segment(0, 120)], 3: [segment(140, 260), (*segment(140, 260, aside=25), 1.5 * FAINT_DN)]},
                       seed=seed)
        assert explained(frames) == []


def test_one_bright_dash_on_its_extension_does_not_explain_it():
    """A short bright dash sums to a line's z, but lights less than half the window: a star's flicker, an insect."""
    frames = night({2: [segment(0, 120)], 3: [(*segment(200, 224), 60.0)]})
    assert explained(frames) == []


def test_a_continuation_under_a_third_as_bright_does_not_explain_it():
    """A bright line and, on its extension, a line a fifth as bright: another object (a faint satellite crossing a
    meteor's path)."""
    frames = night({2: [(*segment(-100, 100), 14.0)], 3: [(*segment(120, 320), 3.0)]})
    assert explained(frames) == []
    frames = night({2: [(*segment(-100, 100), 14.0)], 3: [(*segment(120, 320), 8.0)]})
    assert len(explained(frames)) == 1                          # a little fainter: the same satellite


def test_a_line_on_its_extension_beyond_the_reach_does_not_explain_it():
    """Further than REACH_MAX_PX along its line, a line is another object's (the sky circle's far side)."""
    start = faint_crossing.REACH_MAX_PX + 90
    frames = night({2: [segment(-150, -30)], 3: [segment(-150 + start, -30 + start)]})
    assert explained(frames) == []
    for seed in (1, 3):                                         # within reach, the same line is explained, the
        frames = night({2: [segment(-150, -30)], 3: [segment(-150 + start - 200, -30 + start - 200)]}, seed=seed)
        assert len(explained(frames)) == 1                      # control lines off it however far out it lies


def test_the_erase_mask_lies_on_the_line_in_the_model_input():
    line = faint_crossing.Line((652.0, 488.0), (1.0, 0.0), -100.0, 100.0)
    mask = faint_crossing.erase_mask([line], (WIDTH, HEIGHT))
    assert mask.shape == (400, 400) and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    assert mask[200, 200] and mask[200, 200 - 28] and mask[200, 200 + 28]
    assert not mask[200, 200 - 40] and not mask[190, 200]


class LineRescore:
    """The model's second opinion for these frames: a meteor while the candidate's line stands out of its 400×400
    difference image (its pixels along the line denser than elsewhere), else not."""

    def __init__(self, a: np.ndarray, b: np.ndarray):
        self.region = np.zeros((400, 400), np.uint8)
        scale = np.array([400 / WIDTH, 400 / HEIGHT])
        cv2.line(self.region, tuple(int(v) for v in (a * scale).round()), tuple(int(v) for v in (b * scale).round()),
                 1, 1)
        self.region = self.region > 0
        self.calls = 0

    def __call__(self, diff: np.ndarray) -> float:
        self.calls += 1
        return 0.95 if diff[self.region].mean() > 1.3 * diff[~self.region].mean() else 0.1


def decide(frames: list[np.ndarray], read: bool = True):
    """Frame 2 as a model candidate, decided with frames 1 and 3 as its neighbours (files read from `frames`)."""
    results = results_of(frames)
    rescore = LineRescore(*segment(0, 120))
    assert rescore(results[2].diff) == 0.95                     # the line stands out of the model's input
    return decided_reading(frames, results, rescore, read)[0]


def decided_reading(frames: list[np.ndarray], results: list, rescore, read: bool = True) -> tuple:
    """Frame 2 of `results` (from `results_of`) decided with `rescore`, and the files read (their frames from
    `frames`; none without `read`)."""
    decided, reads = all_decided_reading(frames, results, rescore, read)
    return decided[2], reads


def all_decided_reading(frames: list[np.ndarray], results: list, rescore, read: bool = True) -> tuple:
    """Every frame of `results` decided with `rescore`, and the files read (as `decided_reading`)."""
    reads = []

    def read_gray(path: Path) -> np.ndarray:
        reads.append(path)
        return frames[[r.file for r in results].index(path)]

    decider = Decider(0.85, rescore=rescore, read_gray=read_gray if read else None)
    return [r for result in results for r in decider.push(result)] + decider.finish(), reads


def test_the_satellite_check_holds_back_a_faint_crossing():
    candidate = decide(night(SATELLITE))
    assert (candidate.flag, candidate.detection) == ("satellite", False)


def test_without_frames_to_read_the_faint_crossing_stays_a_detection():
    candidate = decide(night(SATELLITE), read=False)
    assert (candidate.flag, candidate.detection) == ("", True)


def test_a_faint_meteor_stays_a_detection():
    candidate = decide(night({2: [segment(0, 120)]}))
    assert (candidate.flag, candidate.detection) == ("", True)


def test_a_candidate_asked_about_twice_is_searched_once_and_let_go_when_decided(monkeypatch):
    """Not explained by the previous frame, a candidate is asked about again with both neighbours: its lines are
    searched once, and the search (its maps) is not kept once the frame is decided."""
    searches = []

    class Counted(faint_crossing.Search):
        def __init__(self, *frames):
            searches.append(self)
            super().__init__(*frames)

        def explained(self, neighbours):
            self.asked = getattr(self, "asked", 0) + 1
            return super().explained(neighbours)

    monkeypatch.setattr(faint_crossing, "Search", Counted)
    candidate = decide(night({2: [segment(0, 120)]}))
    assert len(searches) == 1 and searches[0].asked == 2 and len(searches[0].maps) == 2
    assert candidate.faint_search is None


def results_of(frames: list[np.ndarray], candidates: tuple[int, ...] = (2,)) -> list:
    """The frames as scored results, those of `candidates` the model's candidates."""
    results = [frame_result(index, 0.95 if index in candidates else 0.1,
                            resize_area(binary_difference(frames[index], frames[index - 1])) if index else None)
               for index in range(len(frames))]
    for index, result in enumerate(results[1:], start=1):
        result.previous = results[index - 1].file
    return results


def test_a_candidate_without_lines_reads_no_neighbour_and_each_frame_once():
    """A meteor-like candidate the search finds no line in (the model's candidate, nothing faint around it): only
    its own pair is read, once, however often the check asks."""
    frames = night({})
    results = results_of(frames)
    candidate, reads = decided_reading(frames, results, lambda diff: 0.95)
    assert (candidate.flag, candidate.detection) == ("", True)
    assert sorted(reads) == sorted([results[2].file, results[1].file])


def test_each_frame_is_decoded_once_however_often_the_check_asks():
    """Not explained by the previous frame, a candidate with a line (a faint meteor) is asked again with both
    neighbours: it needs its own pair and both adjacent pairs, and each frame is decoded once (its own is also the
    next pair's previous frame)."""
    frames = night({2: [segment(0, 120)]})
    results = results_of(frames)
    candidate, reads = decided_reading(frames, results, LineRescore(*segment(0, 120)))
    assert (candidate.flag, candidate.detection) == ("", True)
    assert sorted(reads) == sorted(result.file for result in results)


def test_consecutive_candidates_share_their_decoded_frames():
    """Two candidates in a row, each with a faint line of its own: the second's pairs are mostly the first's
    neighbours' (frames 1–3), so over both decisions every frame of the five is decoded once (GRAY_FRAMES_KEPT)."""
    frames = night({2: [segment(0, 120)], 3: [segment(0, 120, aside=150)]}, frames=5)
    results = results_of(frames, candidates=(2, 3))
    decided, reads = all_decided_reading(frames, results, lambda diff: 0.95)
    assert [r.detection for r in decided] == [False, False, True, True, False]
    assert all(r.faint_search is None for r in decided)
    asked = [faint_crossing.Search(frames[i], frames[i - 1]).lines for i in (2, 3)]
    assert all(asked)                                       # each candidate has a line: its neighbours are read
    assert sorted(reads) == sorted(result.file for result in results)


@pytest.mark.parametrize("unreadable, flag, said", [
    (0, "satellite", "faint crossings not followed into"),   # the previous neighbour's pair: the next one explains
    (2, "", "faint crossings not looked for"),                # its own frame: the candidate stays as it was
])
def test_a_frame_that_cannot_be_read_leaves_out_what_it_is_needed_for(caplog, unreadable, flag, said):
    from gualta.preprocess import BadFrame

    frames = night(SATELLITE)
    results = results_of(frames)

    def read(path: Path) -> np.ndarray:
        if path == results[unreadable].file:
            raise BadFrame("truncated JPEG (no end-of-image marker)")
        return frames[[r.file for r in results].index(path)]

    decider = Decider(0.85, rescore=LineRescore(*segment(0, 120)), read_gray=read)
    decided = [r for result in results for r in decider.push(result)] + decider.finish()
    assert (decided[2].flag, decided[2].detection) == (flag, not flag)
    assert caplog.text.count(said) == 1                         # tried once, however often the check asks


def test_the_same_frames_give_the_same_lines():
    """The null is seeded: a line's z does not change from one call to the next."""
    frames = night(SATELLITE)
    first, second = explained(frames), explained(frames)
    assert first and [line.z for line in first] == [line.z for line in second]


def test_a_candidate_kept_by_its_own_long_bright_streak_reads_no_frame():
    """A long bright streak that no adjacent difference explains keeps its frame whatever is erased (a meteor beside
    a satellite): faint crossings are not searched for it, so no frame is read, and with nothing else explained the
    frame is not noted as sharing it with a satellite."""
    frames = night(SATELLITE)
    results = results_of(frames)
    meteor = streak_piece(((60, 300), (120, 330)))
    assert meteor.is_long_and_bright
    results[2].pieces = [meteor]
    candidate, reads = decided_reading(frames, results, LineRescore(*segment(0, 120)))
    assert (candidate.flag, candidate.detection, candidate.note) == ("", True, "")
    assert reads == []
