"""The frames of one night, each decoded once and paired with the last good frame before it (bad frames skipped).

Shared by dataset building (gualta.dataset), the inference client (gualta.detect) and the benchmarks.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from gualta import allsky
from gualta.classical import estimate_sky_mask
from gualta.client_errors import ClientError
from gualta.preprocess import BadFrame, read_gray, read_image, sky_sized, to_reference_scale, write_image_file

if TYPE_CHECKING:
    from gualta.config import Settings

log = logging.getLogger(__name__)

BLANK_RANGE_DN = 3          # a frame whose pixels all lie this close together: no picture
BLANK_BLOCK_PX = 16         # `looks_flat` judges 16×16 block means: a pixel's noise and a hot pixel average away
BLANK_SHARE = 0.95          # ...95 % of them within BLANK_RANGE_DN of the median block (real frames: at most 0.6)
FLAT_WINDOW = 20            # frames before: if most of them look as flat, flat is the camera's picture (no circle)
FLAT_MIN_SEEN = 10          # ...judged once that many of them were decoded (before: a flat frame is no picture)
BLANK = "blank: no picture (a black or uniform image)"
BLANK_RUN = "blank {frames} (a black or uniform image)"     # `NightFrames.end_run`: a run of them after the first
UNFILLED_SHARE = 0.05       # a frame whose last 5 % of rows are one grey level (not black, not white) was never filled
PARTLY_WRITTEN = "partly written: its last rows are one grey level"
REPEAT_MAX_CHANGED = 0.01   # a frame differing from the last picture in fewer pixels than this: the same picture
NOISY_SHARE = 0.1           # …if at least this share of its pixels is off their 3×3 median (a real exposure's noise)
UNREADABLE = "unreadable, truncated or not an image"
ODD_SIZED = "odd-sized: "   # the note of a lone frame of another size than the frames either side, before the sizes
SIZE_CHANGED = "frame size changed from "     # ...of the first frame after a camera change
REPEATED = "repeated: "      # the reason a frame repeating the picture before it is not used, before which, and why:
FROZEN = "camera frozen"    # ...this, or another copy of the same moment
NO_EARLIER = "no good earlier frame in the night to compare with"
MASK_FRAMES = 25            # `drawn_mask`: frames read, spread over the night, ...
MASK_MIN_FRAMES = 3         # ... at least this many of them readable
MASK_CHANGE_DN = 60         # `restless_pixels`: a pixel changing this much from one frame to the next, ...
MASK_CHANGE_SHARE = 0.5     # ... in at least this share of the pairs read, ...
MASK_TEXT_LINE_PX = 61      # ... joined to such pixels this close on its row (the digits of one line of text), ...
MASK_CHANGE_REACH_PX = 8    # ... and this much around them


class NightFrames:
    """The frames of one night, each decoded at most once, paired with the last good frame before them.

    A frame is bad if it cannot be decoded, if it is blank (a black or uniform image: the camera gave no picture,
    and the frame after it would brighten as a whole; one still stamped with the watermark, its hot pixels showing,
    is blank too, unless most recent frames look as flat — `looks_flat`), if it was partly written (its last rows one
    grey level: `partly_written`), if it repeats the picture before it (a frozen camera saving one image again,
    perhaps under a new watermark: the next new picture is then compared with the sky it followed, minutes old, and a
    long freeze is a long gap), or if it alone differs in size from the good frames either side of it (a size that
    persists is a camera change: only the pair across the change is skipped). Decoded images older than the last
    predecessor handed out are released, so memory stays small if frames are asked for in time order. A run of blank
    frames, or of one picture repeated, is warned of at its first frame and counted in one line when it ends
    (`end_run`: a dead camera gave a line a frame, all night).
    """

    def __init__(self, frames: list[Path], logger: logging.Logger | None = None, mask: np.ndarray | None = None):
        taken = {frame: allsky.taken_at(frame) for frame in frames}
        self.mask = mask                                     # `read_mask`: where the fireball and streak checks look
        self.frames = sorted(frames, key=taken.get)
        self._taken = [taken[frame] for frame in self.frames]       # as when listed: a file rewritten later keeps it
        self.log = logger or log
        self._position = {frame: i for i, frame in enumerate(self.frames)}
        self._images: dict[int, np.ndarray] = {}
        self._shapes: dict[int, tuple[int, ...] | None] = {}      # None: not decodable
        self._rejected: set[int] = set()
        self._bad: dict[int, str] = {}                                # why a frame could not be used
        self._repeats: dict[int, int] = {}                            # frame → the first frame of its picture
        self._afresh: dict[int, str] = {}                             # frames not compared with the one before: why
        self._unpaired: dict[int, str] = {}                           # decodable frames `pair` found none for: why
        self._pictures: dict[int, np.ndarray | None] = {}             # decoded, not yet released
        self._decode_errors: dict[int, str] = {}                      # why a frame could not be decoded
        self._file_shapes: dict[int, tuple[int, ...]] = {}            # decoded frames: the file's own size
        self._scales: dict[int, float] = {}                           # ...its pixels per pixel read
        self._flat: dict[int, bool] = {}                              # decoded frames: `looks_flat`
        self._run: tuple[str, int, int] | None = None     # frames skipped in a row for one reason: (what, first, last)

    def append(self, frame: Path) -> None:
        """Add a frame taken after every frame so far (a night that grows while it is watched)."""
        taken = allsky.taken_at(frame)
        if self.frames and taken <= self._taken[-1]:
            raise ValueError(f"{frame.name} is not newer than {self.frames[-1].name}")
        self._position[frame] = len(self.frames)
        self.frames.append(frame)
        self._taken.append(taken)

    def start_afresh(self, frame: Path, reason: str) -> None:
        """Compare the frame with no earlier one (the frames before it may be of another time: the camera's clock
        was set back); the frames after it pair with it as usual."""
        self._afresh[self._position[frame]] = reason

    def afresh_reason(self, frame: Path) -> str:
        """Why the frame is not compared with the one before ('' if it is)."""
        return self._afresh.get(self._position[frame], "")

    def unpaired_reason(self, frame: Path) -> str:
        """Why `pair` found no frame to pair a decodable frame with ('' if it did, or was not asked)."""
        return self._unpaired.get(self._position[frame], "")

    def __contains__(self, frame: Path) -> bool:
        return frame in self._position

    def image(self, frame: Path) -> np.ndarray | None:
        """The frame in 8-bit gray, or None if it is bad: not decodable, blank, partly written or a repeat
        (`bad_reason`)."""
        return self._image(self._position[frame])

    def scale(self, frame: Path) -> float:
        """The frame file's pixels per pixel of its image here: above 1 for a large camera's frame, read at the
        reference scale (`preprocess.to_reference_scale`)."""
        return self._scales.get(self._position[frame], 1.0)

    def bad_reason(self, frame: Path) -> str:
        """Why a frame's image cannot be used ('' if it can)."""
        self._image(self._position[frame])
        return self._bad.get(self._position[frame], "")

    def pair(self, frame: Path) -> allsky.FramePair | None:
        """The frame and the last good frame before it, or None (warned) if there is no such pair."""
        i = self._position[frame]
        if self._shape(i) is None:
            return None
        self._take_over_afresh(i)
        if i in self._afresh:
            return None
        j = self._predecessor(i)
        if j is None:
            if i > 0:
                self.log.warning("%s: no earlier good frame in the night to compare with: skipped", frame.name)
                self._unpaired[i] = NO_EARLIER
            return None
        if self._shape(j) != self._shape(i):
            if self._is_odd_sized(i):
                self._reject_odd_sized(i)
            else:
                changed = f"{size_text(self._shape(j))} to {size_text(self._shape(i))}"
                self.log.warning("%s: frame size changed from %s: pair with %s skipped", frame.name, changed,
                                 self.frames[j].name)
                self._unpaired[i] = f"{SIZE_CHANGED}{changed}: not compared with {self.frames[j].name}"
            return None
        self._release_before(j)
        return allsky.FramePair(self.frames[j], frame, self._taken[i] - self._taken[j])

    def _image(self, i: int) -> np.ndarray | None:
        if i in self._images or self._shapes.get(i, ()) is None:      # judged good and kept, or known to be bad
            return self._images.get(i)
        image = self._picture(i)
        if image is None:
            return self._unusable(i, UNREADABLE, f"bad frame {self._decode_errors[i]}: skipped")
        self._flat[i] = looks_flat(image)
        if is_blank(image) or (self._flat[i] and not self._flat_is_usual(i)):
            return self._unusable(i, BLANK, f"{self.frames[i].name}: blank frame (a black or uniform image): skipped",
                                  BLANK_RUN)
        if partly_written(image):
            return self._unusable(i, PARTLY_WRITTEN, f"{self.frames[i].name}: {PARTLY_WRITTEN}: skipped")
        original = self._repeated(i, image)
        if original is not None:
            self._repeats[i] = original
            name, first = self.frames[i].name, self.frames[original].name
            why = "another copy of the same moment" if self._taken[i] == self._taken[original] else FROZEN
            return self._unusable(i, f"{REPEATED}the same picture as {first} ({why})",
                                  f"{name}: the same picture as {first} ({why}): skipped",
                                  f"{{frames}} the same picture as {first} ({why})")
        self._images[i], self._shapes[i] = image, self._file_shapes[i]      # sizes compared as the camera's
        if self._run is not None and i > self._run[2]:
            self.end_run()
        return image

    def _picture(self, i: int) -> np.ndarray | None:
        """Frame i decoded to gray at the reference scale (None if it cannot be decoded), not yet judged blank or
        repeated."""
        if i not in self._pictures:
            try:
                image = sky_sized(read_gray(self.frames[i]), self.frames[i])
                self._pictures[i] = to_reference_scale(image)
                self._file_shapes[i] = image.shape
                self._scales[i] = image.shape[1] / self._pictures[i].shape[1]
            except BadFrame as exc:
                self._pictures[i], self._decode_errors[i] = None, str(exc)
        return self._pictures[i]

    def _repeated(self, i: int, image: np.ndarray) -> int | None:
        """The frame whose picture frame i repeats, or None: frame i is compared with the last frame before it that
        holds a picture (unreadable and blank frames passed over; a repeat stands for the picture it repeats)."""
        for j in range(i - 1, -1, -1):
            j = self._repeats.get(j, j)
            if self._shapes.get(j, ()) is None:
                continue                                # known unreadable or blank
            earlier = self._picture(j)
            if earlier is None or (j not in self._shapes and is_blank(earlier)):     # not judged yet
                continue
            return j if same_picture(image, earlier) else None
        return None

    def _flat_is_usual(self, i: int) -> bool:
        """Whether most of the FLAT_WINDOW frames before frame i look flat too (once FLAT_MIN_SEEN of them were
        decoded): a camera whose dark sky fills the frame, not a failed exposure. Such a camera loses its night's
        first FLAT_MIN_SEEN frames; a camera with a lens circle has its failed exposures skipped at the night's start
        and up to about FLAT_MIN_SEEN in a row later (more, and the camera gave no picture for minutes: they are
        then taken for its picture, and the first real frame after them is compared with the last of them)."""
        seen = [self._flat[j] for j in range(max(i - FLAT_WINDOW, 0), i) if j in self._flat]
        return len(seen) >= FLAT_MIN_SEEN and 2 * sum(seen) > len(seen)

    def _unusable(self, i: int, reason: str, message: str, run: str = "") -> None:
        self._shapes[i], self._bad[i] = None, reason
        self._images.pop(i, None)
        self._pictures.pop(i, None)
        self._decode_errors.pop(i, None)
        self._reject(i, message, run)

    def _shape(self, i: int) -> tuple[int, ...] | None:
        if i not in self._shapes:
            self._image(i)
        return self._shapes[i]

    def _decodable_neighbour(self, i: int, step: int) -> int | None:
        j = i + step
        while 0 <= j < len(self.frames):
            if self._shape(j) is not None:
                return j
            j += step
        return None

    def _is_odd_sized(self, i: int) -> bool:
        after = self._decodable_neighbour(i, +1)
        if after is None or self._shape(after) == self._shape(i):
            return False
        before = self._decodable_neighbour(i, -1)
        return before is not None and self._shape(before) == self._shape(after)

    def _is_good(self, i: int) -> bool:
        if self._shape(i) is None:
            return False
        if self._is_odd_sized(i):
            self._reject_odd_sized(i)
            return False
        return True

    def _reject_odd_sized(self, i: int) -> None:
        sizes = (f"{size_text(self._shape(i))} but the frames either side are "
                 f"{size_text(self._shape(self._decodable_neighbour(i, +1)))}")
        self._unpaired[i] = f"{ODD_SIZED}{sizes}"
        self._reject(i, f"{self.frames[i].name}: frame is {sizes}: skipped")

    def _take_over_afresh(self, i: int) -> None:
        """A bad frame to be compared with none hands that on to the next good frame: the frames before it are of
        another time (daylight, a clock set back), and the next would pair with one of them."""
        for j in range(i - 1, -1, -1):
            if self._is_good(j):
                return
            if j in self._afresh:
                self._afresh.setdefault(i, self._afresh[j])
                return

    def _predecessor(self, i: int) -> int | None:
        return next((j for j in range(i - 1, -1, -1) if self._is_good(j)), None)

    def _reject(self, i: int, message: str, run: str = "") -> None:
        """Warn that frame i is skipped; one of a run (`run`: what its frames are, "{frames}" for the word), after
        its first, is counted instead (`end_run`)."""
        if i in self._rejected:
            return
        self._rejected.add(i)
        if run and self._run is not None and self._run[0] == run and self._run[2] == i - 1:
            self._run = (run, self._run[1], i)
            return
        if self._run is not None and i > self._run[2]:
            self.end_run()
        self.log.warning(message)
        if run:
            self._run = (run, i, i)

    def end_run(self) -> None:
        """Say how many more frames the run of blank or repeated frames being skipped held, and its last (when a
        frame of another kind comes, or the night ends)."""
        if self._run is None:
            return
        what, first, last = self._run
        self._run = None
        if last > first:
            more = last - first
            self.log.warning("%s: %d more %s, until %s: skipped", self.frames[first].name, more,
                             what.format(frames="frame" if more == 1 else "frames"), self.frames[last].name)

    def _release_before(self, i: int) -> None:
        for j in [j for j in self._images if j < i]:
            del self._images[j]
        for j in [j for j in self._pictures if j < i]:
            del self._pictures[j]


def read_mask(path: Path) -> np.ndarray:
    """The mask an image file draws over the camera's frame (any size: it is stretched to each frame): 255 where
    frames are looked at (lighter than mid-grey), 0 where not. ValueError if it cannot be read or is black all over."""
    try:
        image = read_image(path, cv2.IMREAD_GRAYSCALE)
    except BadFrame as exc:
        raise ValueError(str(exc).removeprefix(f"{path}: ")) from None
    mask = np.where(image > 127, 255, 0).astype(np.uint8)
    if not mask.any():
        raise ValueError("black all over: nothing would be looked at")
    return mask


def drawn_mask(frames: list[Path], count: int = MASK_FRAMES) -> np.ndarray:
    """A mask for `read_mask` drawn from a night's frames (`count` of them, spread over it, each with the frame after
    it): white where they show sky, black elsewhere — outside the lens, below the skyline, text in the corners
    (`classical.estimate_sky_mask` to the sky's edge, on the frames of the night's usual size) — and
    black where the frame changes from one frame to the next in most pairs of pictures (`restless_pixels`: the
    camera's own text, over the sky too, or a flickering light; a pair with a black frame tells nothing of it).
    ValueError if fewer than MASK_MIN_FRAMES can be read."""
    taken = min(count, len(frames))
    picked = sorted({round(i * (len(frames) - 1) / max(taken - 1, 1)) for i in range(taken)})
    pairs = [(read_or_none(frames[i]), read_or_none(frames[i + 1]) if i + 1 < len(frames) else None) for i in picked]
    shapes = [image.shape for image, _ in pairs if image is not None]
    usual = max(set(shapes), key=shapes.count, default=None)
    images = [image for image, _ in pairs if image is not None and image.shape == usual and not is_blank(image)]
    if len(images) < MASK_MIN_FRAMES:
        raise ValueError(f"{len(images)} frame(s) of one size could be read: at least {MASK_MIN_FRAMES} are needed")
    sky = estimate_sky_mask(images, margin=0)
    consecutive = [(a, b) for a, b in pairs if a is not None and b is not None and a.shape == b.shape == usual
                   and not is_blank(a) and not is_blank(b)]
    if consecutive:
        sky[restless_pixels(consecutive)] = 0
    return sky


def write_mask(settings: Settings, folder: str | Path | None, out: str | Path | None, replace: bool = False) -> str:
    """Draw a mask from the night `folder` (None: the latest night) and write it to `out` (None: guAlta_mask, else
    guAlta_mask.png here); what to tell the operator. ClientError, before any frame is read, if `out` exists (a mask
    drawn by hand: unless `replace`) or is no image file's name; ClientError if the mask cannot be drawn or written."""
    from gualta.detect import resolve_night         # detect imports this module

    out = Path(out) if out else settings.mask or Path("guAlta_mask.png")
    if out.exists() and not replace:
        raise ClientError(f"{out} exists (a mask drawn by hand is not written over): --replace writes a new one")
    if not cv2.haveImageWriter(str(out)):
        raise ClientError(f"cannot write a mask named {out}: give it an image file's name, .png")
    night = resolve_night(settings, folder)
    try:
        mask = drawn_mask(allsky.list_frames(night))
    except ValueError as exc:
        raise ClientError(f"no mask drawn from {night}: {exc}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_image_file(out, mask)
    except OSError:
        raise ClientError(f"cannot write {out} (a .png name, in a folder that can be written)") from None
    return (f"wrote {out}: white where the frames of night {night.name} show sky ({(mask > 0).mean():.0%} of the "
            "frame), black outside the lens, below the skyline and where the picture changes from one frame to the "
            "next in most pairs (the camera's own text). Look at it, paint black whatever else the checks must not "
            f"read, and set guAlta_mask = {str(out.resolve())!r}")      # a Python literal: \\ and quotes kept


def read_or_none(frame: Path) -> np.ndarray | None:
    """A frame in gray, or None (warned) if it cannot be read."""
    try:
        return read_gray(frame)
    except BadFrame as exc:
        log.warning("%s", exc)
        return None


def restless_pixels(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Where consecutive frames (`pairs`, at least one) differ by MASK_CHANGE_DN or more in at least MASK_CHANGE_SHARE
    of the pairs — a meteor, a satellite or a cloud's edge passes a spot in few of them, the time and exposure the
    camera writes change in every one — joined along a line of text (MASK_TEXT_LINE_PX) and widened by
    MASK_CHANGE_REACH_PX (bool)."""
    changed = sum((cv2.absdiff(a, b) >= MASK_CHANGE_DN).astype(np.uint16) for a, b in pairs)
    restless = (changed >= MASK_CHANGE_SHARE * len(pairs)).astype(np.uint8)
    restless = cv2.morphologyEx(restless, cv2.MORPH_CLOSE, np.ones((1, MASK_TEXT_LINE_PX), np.uint8))
    reach = 2 * MASK_CHANGE_REACH_PX + 1
    return cv2.dilate(restless, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (reach, reach))) > 0


def is_blank(image: np.ndarray) -> bool:
    """Whether a gray frame holds no picture at all: every pixel within BLANK_RANGE_DN of the others (a real frame
    has at least its sky's noise and stars, and the lens circle against the black around it)."""
    return int(image.max()) - int(image.min()) <= BLANK_RANGE_DN


def partly_written(image: np.ndarray) -> bool:
    """Whether a gray frame ends in rows of one grey level (its last UNFILLED_SHARE of rows all one value, neither
    black nor saturated): the part of a picture its writer or decoder never filled, saved as a complete JPEG — the
    model read the edge of the grey as a meteor (12 of 14 such frames reported). A sky's rows always hold noise (a
    dark sky's 1 DN of it too)."""
    band = image[-max(int(image.shape[0] * UNFILLED_SHARE), 1):]
    low, high = int(band.min()), int(band.max())
    return high == low and BLANK_RANGE_DN < low < 250


def looks_flat(image: np.ndarray) -> bool:
    """Whether a gray frame is black or uniform but for its noise, hot pixels and watermark (an exposure that failed
    is still stamped): BLANK_SHARE of its 16×16 blocks within BLANK_RANGE_DN of the median block. A real frame has
    its sky against the black around the lens circle, or a sky that varies: simulated frames of every sky, dusk to
    dawn, have at most 0.6 of their blocks so (a saturated dusk); a dark sky filling the whole frame could look
    flat, hence `NightFrames._flat_is_usual`."""
    return uniform_share(image) >= BLANK_SHARE


def uniform_share(image: np.ndarray) -> float:
    """The share of a gray frame's 16×16 blocks within BLANK_RANGE_DN of the median block."""
    height, width = image.shape[:2]
    blocks = cv2.resize(image, (max(width // BLANK_BLOCK_PX, 1), max(height // BLANK_BLOCK_PX, 1)),
                        interpolation=cv2.INTER_AREA).astype(np.int16)
    return float((np.abs(blocks - np.median(blocks)) <= BLANK_RANGE_DN).mean())


def same_picture(image: np.ndarray, earlier: np.ndarray) -> bool:
    """Whether a frame repeats an earlier picture: fewer than REPEAT_MAX_CHANGED of its pixels differ at all, in a
    picture with noise (a new exposure's noise changes most of them; a frozen camera's copy changes none, or only
    its watermark's). A noiseless picture (a render) unchanged but for a streak is a new frame with a meteor."""
    if image.shape != earlier.shape or np.count_nonzero(image != earlier) >= REPEAT_MAX_CHANGED * image.size:
        return False
    return np.count_nonzero(cv2.medianBlur(earlier, 3) != earlier) >= NOISY_SHARE * earlier.size


def size_text(shape: tuple[int, ...] | None) -> str:
    """'W×H' of an image shape."""
    return "unknown size" if shape is None else f"{shape[1]}×{shape[0]}"
