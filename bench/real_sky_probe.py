"""The model on real sky pixels: meteors drawn into real night-sky photographs.

No labelled real AllSky pairs exist, so each real frame (gray) serves as the sky of a pair: the previous frame is
the photograph plus fresh camera noise, the current one the photograph plus another noise draw plus, or not, a
straight streak (2 px wide, slightly blurred, `amplitude` DN above the sky, random place and direction), saved as a
JPEG; the pair goes through the client's own difference image and model. Empty pairs should score low, streaks
high. Figures are printed (median score of `--repeats` pairs per cell), never asserted. The client's streak check
(`gualta.streak`) gets the same pairs, shorter streaks too, and empty pairs whose current sky is shifted by half a
pixel (stars moving between frames): the share of pairs in which it finds a streak. The plane check's wingtip
lights (`gualta.wingtips`) are read on colour pairs made the same way with a white streak drawn (the share of pairs
in which a streak gets marked: a meteor's or a satellite's should never be), and on each photograph's own trails
against a median-filtered copy of it (a stand-in previous frame without thin lines: a real plane's trail, if the
photograph holds one).

    python bench/real_sky_probe.py --frames ../shared/data/real_skies/*.jpg [--model models/guAlta.onnx]
                                   [--noise 3] [--repeats 4] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gualta.model import load_model  # noqa: E402
from gualta.cli import non_negative_int, non_negative_number, positive_int  # noqa: E402
from gualta import wingtips  # noqa: E402
from gualta.preprocess import BadFrame, difference_image, read_frame, to_gray  # noqa: E402
from gualta.streak import pieces  # noqa: E402

AMPLITUDES_DN = (0, 8, 15, 30, 60)
LENGTHS_PX = (60, 150, 300)
STREAK_LENGTHS_PX = (20, 60, 150)
SKY_SHIFT_PX = (0.4, 0.3)        # x, y: about what the sky turns in 30 s near the edge of an all-sky frame


def with_noise(sky: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return sky + rng.normal(0.0, sigma, sky.shape)


def streak(shape: tuple[int, int], amplitude: float, length: int, rng: np.random.Generator) -> np.ndarray:
    """A straight streak of `amplitude` DN and `length` px somewhere in the middle half of the frame."""
    height, width = shape
    layer = np.zeros(shape, np.float32)
    x1, y1 = int(rng.integers(width // 4, 3 * width // 4)), int(rng.integers(height // 4, 3 * height // 4))
    angle = rng.uniform(0, np.pi)
    cv2.line(layer, (x1, y1), (int(x1 + length * np.cos(angle)), int(y1 + length * np.sin(angle))), amplitude, 2)
    return cv2.GaussianBlur(layer, (3, 3), 0.8)


def as_jpeg(image: np.ndarray, quality: int = 85, mode: int = cv2.IMREAD_GRAYSCALE) -> np.ndarray:
    ok, encoded = cv2.imencode(".jpg", np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(encoded, mode)


def shifted(sky: np.ndarray) -> np.ndarray:
    matrix = np.float32([[1, 0, SKY_SHIFT_PX[0]], [0, 1, SKY_SHIFT_PX[1]]])
    return cv2.warpAffine(sky, matrix, sky.shape[::-1], borderMode=cv2.BORDER_REFLECT)


def probe_streak_check(sky: np.ndarray, sigma: float, repeats: int, rng: np.random.Generator) -> dict:
    """(row, length) → share of `repeats` pairs in which the streak check finds a streak; rows: "none", "shifted"
    (the current sky half a pixel away) and the streak amplitudes."""
    def found(current: np.ndarray) -> float:
        previous = as_jpeg(with_noise(sky, sigma, rng))
        return float(any(piece.is_streak for piece in pieces(as_jpeg(current), previous)))

    table = {}
    for length in STREAK_LENGTHS_PX:
        table["none", length] = np.mean([found(with_noise(sky, sigma, rng)) for _ in range(repeats)])
        table["shifted", length] = np.mean([found(with_noise(shifted(sky), sigma, rng)) for _ in range(repeats)])
        for amplitude in AMPLITUDES_DN[1:]:
            table[amplitude, length] = np.mean([found(with_noise(sky, sigma, rng) + streak(sky.shape, amplitude,
                                                                                            length, rng))
                                                for _ in range(repeats)])
    return table


def marked_pieces(current: np.ndarray, previous: np.ndarray) -> list:
    """The streak check's pieces of a colour pair worth reading, marked for wingtip lights as the client does."""
    found = wingtips.marked(pieces(to_gray(current), to_gray(previous)), current, previous)
    return [piece for piece in found if wingtips.worth_reading(piece)]


def probe_wingtips(sky: np.ndarray, sigma: float, repeats: int, rng: np.random.Generator) -> tuple[float, int, int]:
    """The share of colour pairs with a white +60 DN streak (150 px) in which a piece gets wingtip lights, and the
    photograph's own trails against its median-filtered copy: (share, marked pieces, pieces worth reading)."""
    def marked_with_streak() -> float:
        previous = as_jpeg(with_noise(sky, sigma, rng), mode=cv2.IMREAD_COLOR)
        current = with_noise(sky, sigma, rng) + streak(sky.shape[:2], 60.0, 150, rng)[..., None]
        return float(any(piece.wingtips for piece in marked_pieces(as_jpeg(current, mode=cv2.IMREAD_COLOR), previous)))

    share = float(np.mean([marked_with_streak() for _ in range(repeats)]))
    photograph = np.clip(sky, 0, 255).astype(np.uint8)
    own = marked_pieces(photograph, cv2.medianBlur(photograph, 9))
    return share, sum(piece.wingtips for piece in own), len(own)


def probe(model, sky: np.ndarray, sigma: float, repeats: int, rng: np.random.Generator) -> dict:
    """(amplitude, length) → median score of `repeats` pairs."""
    previous = as_jpeg(with_noise(sky, sigma, rng))
    table = {}
    for amplitude in AMPLITUDES_DN:
        for length in LENGTHS_PX:
            scores = []
            for _ in range(repeats):
                current = with_noise(sky, sigma, rng)
                if amplitude:
                    current += streak(sky.shape, amplitude, length, rng)
                diff = difference_image(as_jpeg(current), previous)
                scores.append(float(model.predict(np.stack([diff]))[0]))
            table[amplitude, length] = float(np.median(scores))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=Path, nargs="+", required=True, help="real night-sky photographs")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "guAlta.onnx")
    parser.add_argument("--noise", type=non_negative_number, default=3.0,
                        help="camera noise added to each frame (DN, σ)")
    parser.add_argument("--repeats", type=positive_int, default=4)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    args = parser.parse_args(argv)
    for frame in args.frames:
        try:
            read_frame(frame)
        except BadFrame as exc:
            parser.error(str(exc))
    model, rng = load_model(args.model, threads=2), np.random.default_rng(args.seed)
    print(f"model {args.model.name}; noise σ {args.noise} DN; median p(meteor) of {args.repeats} pairs per cell")
    print(f"{'frame':44s} {'streak DN':>9s} " + " ".join(f"{length:>6d}px" for length in LENGTHS_PX))
    for frame in args.frames:
        table = probe(model, read_frame(frame).astype(np.float32), args.noise, args.repeats, rng)
        for amplitude in AMPLITUDES_DN:
            label = "none" if amplitude == 0 else f"+{amplitude}"
            cells = " ".join(f"{table[amplitude, length]:8.2f}" for length in LENGTHS_PX)
            print(f"{frame.name[:44]:44s} {label:>9s} {cells}")
    print(f"\nstreak check: share of {args.repeats} pairs with a streak (none / sky shifted by {SKY_SHIFT_PX} px / "
          f"streaks)")
    print(f"{'frame':44s} {'streak DN':>9s} " + " ".join(f"{length:>6d}px" for length in STREAK_LENGTHS_PX))
    for frame in args.frames:
        table = probe_streak_check(read_frame(frame).astype(np.float32), args.noise, args.repeats, rng)
        for row in ("none", "shifted", *AMPLITUDES_DN[1:]):
            label = row if isinstance(row, str) else f"+{row}"
            cells = " ".join(f"{table[row, length]:8.2f}" for length in STREAK_LENGTHS_PX)
            print(f"{frame.name[:44]:44s} {label:>9s} {cells}")
    print(f"\nwingtip lights: share of {args.repeats} colour pairs with a white +60 DN streak marked; the photograph's "
          f"own trails marked")
    for frame in args.frames:
        share, marked, read = probe_wingtips(read_frame(frame, colour=True).astype(np.float32), args.noise,
                                             args.repeats, rng)
        print(f"{frame.name[:44]:44s} {share:8.2f}   own trails: {marked} of {read} pieces worth reading marked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
