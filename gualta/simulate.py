"""Realistic AllSky nights with exact ground truth: the dataset this project trains on.

A night is planned once from its seed (site, camera, sky, horizon, stars, moon, clouds, events) and then every frame
is rendered independently from that plan, so nights are reproducible and frames render in parallel:

  clouds that drift and evolve → sky background under them (airglow, light pollution, twilight, moonlight, Milky
  Way) → stars rotating about the pole → moon and glare → events (meteors, fireballs, satellites, planes) →
  horizon silhouettes and the fisheye circle → insects in front of them → white balance → sensor shot/read noise,
  hot pixels → camera smoothing → watermark → JPEG.

Ground truth per frame (`ground_truth.csv` in the night folder) gives the label, the main event, its streak
endpoints and its peak brightness over the local noise; `night.json` records the night's settings.
"""
from __future__ import annotations

import json
import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from gualta import allsky, preprocess

log = logging.getLogger(__name__)

SIMULATOR_VERSION = "1.5"      # 1.1: a meteor's visibility is measured after the 8-bit clip; 1.2: the moonlit-clouds
                               # sky (the other skies' nights are unchanged); 1.3: ground truth only (frames unchanged):
                               # a streak's ends and length are those over open sky, the brightest of equally
                               # important events is the main one, a crossing the 8-bit clip hides is not recorded;
                               # 1.4: frames exposed shorter than a meteor's flight (twilight) draw only
                               # the part flown while the shutter was open, none under 3 px (other frames unchanged);
                               # 1.5: a meteor adding no more than the difference threshold to the gray frame is
                               # hidden, a peak is what the frame shows of all the event's light (beside a saturated
                               # moon, at the skyline), insects are drawn in front of the trees (only their frames
                               # change)
WIDTH, HEIGHT = 1304, 976
LOW = 4                                  # smooth fields (sky, clouds) are rendered at 1/LOW resolution
SIDEREAL_DEG_PER_S = 360.98565 / 86400.0  # 0.1253° per 30 s frame
SCENARIOS = ("clear", "cloudy", "moon", "mixed", "moonlit-clouds")
MOONLIT = ("moon", "moonlit-clouds")       # skies with a bright moon up for much of the night
# Cloud cover per sky: a front's level drawn between low and high, and the share of fronts that are clear sky instead
CLOUD_LEVELS = {"clear": (0.0, 0.12, 0.6), "cloudy": (0.35, 0.95, 0.0), "moon": (0.0, 0.5, 0.6),
                "mixed": (0.0, 0.85, 0.4), "moonlit-clouds": (0.15, 0.75, 0.2)}
MIN_EXPOSURE_S = 32e-6                   # the shortest exposure of the camera (daylight, bright twilight)
MIN_VISIBLE_SNR = 1.5                    # a meteor dimmer than this over the local noise is labelled no-meteor
MIN_VISIBLE_GRAY_DN = preprocess.THRESHOLD  # nor one adding no more than this to the gray frame: the thesis'
                                         # difference (> 3.5 DN) barely shows it (README)
MIN_SHOWN_SNR = 0.5                      # a crossing (satellite, plane, insect) dimmer than this is not recorded
METEOR_SPEED_PX_S = (80.0, 250.0)        # a meteor's apparent speed across the image (~15–50° per second)
METEOR_DURATION_S = (0.2, 2.0)           # how long a meteor flies its path
FIREBALL_DURATION_S = (1.0, 5.0)
MIN_FLOWN_PX = 3.0                       # a meteor caught flying less than this is a dot nobody could tell from a star
GRAY_WEIGHTS = np.array([0.114, 0.587, 0.299], np.float32)   # B, G, R: cv2.COLOR_BGR2GRAY's luma
EVENT_PRIORITY = ("fireball", "meteor", "satellite", "plane", "insect")
GT_COLUMNS = ["file", "time", "label", "event", "events", "x1", "y1", "x2", "y2", "length_px", "width_px",
              "peak_dn", "peak_snr", "noise_dn", "clouds", "moon_alt", "sun_alt", "exposure_s", "scenario"]
GALACTIC_POLE = (192.859, 27.128)        # RA, Dec in degrees
GALACTIC_CENTRE = (266.405, -28.936)


@dataclass
class Rates:
    """Expected events per frame (satellites and planes then continue over several frames)."""
    meteor: float = 0.05
    fireball: float = 0.003
    satellite: float = 0.02
    plane: float = 0.004
    insect: float = 0.006


# ---------------------------------------------------------------------------------------------------- geometry

def unit_vector(ra_deg, dec_deg):
    """Equatorial unit vectors (…, 3) from right ascension and declination in degrees."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def equatorial_to_horizontal(ha_deg, dec_deg, lat_deg):
    """Hour angle and declination → altitude, azimuth (degrees, azimuth from north through east)."""
    ha, dec, lat = np.radians(ha_deg), np.radians(dec_deg), math.radians(lat_deg)
    sin_alt = np.sin(dec) * math.sin(lat) + np.cos(dec) * math.cos(lat) * np.cos(ha)
    alt = np.arcsin(np.clip(sin_alt, -1, 1))
    y = -np.sin(ha) * np.cos(dec)
    x = np.sin(dec) * math.cos(lat) - np.cos(dec) * math.sin(lat) * np.cos(ha)
    return np.degrees(alt), np.degrees(np.arctan2(y, x)) % 360


def horizontal_to_equatorial(alt_deg, az_deg, lat_deg):
    """Altitude, azimuth → hour angle, declination (degrees)."""
    alt, az, lat = np.radians(alt_deg), np.radians(az_deg), math.radians(lat_deg)
    sin_dec = np.sin(alt) * math.sin(lat) + np.cos(alt) * math.cos(lat) * np.cos(az)
    dec = np.arcsin(np.clip(sin_dec, -1, 1))
    y = -np.sin(az) * np.cos(alt)
    x = np.sin(alt) * math.cos(lat) - np.cos(alt) * math.sin(lat) * np.cos(az)
    return np.degrees(np.arctan2(y, x)) % 360, np.degrees(dec)


@dataclass
class Fisheye:
    """Equidistant all-sky lens: zenith at (cx, cy), horizon on a circle of `radius` pixels."""
    cx: float
    cy: float
    radius: float
    rotation: float        # azimuth of the image's up direction, degrees
    mirrored: bool = True  # looking up, east appears left of north

    def project(self, alt, az):
        """Altitude/azimuth (degrees) → image x, y."""
        r = self.radius * (90.0 - np.asarray(alt)) / 90.0
        theta = np.radians(np.asarray(az) - self.rotation)
        sign = -1.0 if self.mirrored else 1.0
        return self.cx + sign * r * np.sin(theta), self.cy - r * np.cos(theta)

    def unproject(self, x, y):
        """Image x, y → altitude, azimuth (degrees); altitude < 0 outside the circle."""
        sign = -1.0 if self.mirrored else 1.0
        dx, dy = sign * (np.asarray(x) - self.cx), self.cy - np.asarray(y)
        alt = 90.0 - 90.0 * np.hypot(dx, dy) / self.radius
        az = (np.degrees(np.arctan2(dx, dy)) + self.rotation) % 360
        return alt, az


def local_sidereal_time(stamp: datetime, utc_offset_h: float) -> float:
    """Approximate local sidereal time (degrees) at local clock time `stamp`."""
    solar_hour = stamp.hour + stamp.minute / 60 + stamp.second / 3600 - utc_offset_h
    return (100.46 + 0.985647 * (stamp.timetuple().tm_yday - 1) + 15.041 * solar_hour) % 360


def sun_position(stamp: datetime, lat: float, utc_offset_h: float) -> tuple[float, float]:
    """Approximate solar altitude and azimuth (degrees) at local time `stamp`, the simulated site's (its solar time
    is UTC: the client's `allsky.sun_altitude` takes a real place)."""
    day = stamp.timetuple().tm_yday
    declination = -23.44 * math.cos(2 * math.pi * (day + 10) / 365.0)
    solar_hour = stamp.hour + stamp.minute / 60 + stamp.second / 3600 - utc_offset_h
    alt, az = equatorial_to_horizontal(15.0 * (solar_hour - 12.0), declination, lat)
    return float(alt), float(az)


# ---------------------------------------------------------------------------------------------------- textures

def fractal_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float = 3.2) -> np.ndarray:
    """Periodic fractal (power-law spectrum) noise normalised to zero mean and unit deviation."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    freq = np.hypot(fx, fy)
    freq[0, 0] = 1.0
    spectrum = (rng.standard_normal(freq.shape) + 1j * rng.standard_normal(freq.shape)) * freq ** (-beta / 2)
    spectrum[0, 0] = 0
    noise = np.fft.irfft2(spectrum, s=shape).astype(np.float32)
    return (noise - noise.mean()) / (noise.std() + 1e-9)


def sample_tile(tile: np.ndarray, shape: tuple[int, int], offset_x: float, offset_y: float,
                scale: float = 1.0) -> np.ndarray:
    """Read a window of a periodic tile at a sub-pixel offset (wraps around)."""
    ys = (np.arange(shape[0], dtype=np.float32) * scale + offset_y) % tile.shape[0]
    xs = (np.arange(shape[1], dtype=np.float32) * scale + offset_x) % tile.shape[1]
    map_x = np.broadcast_to(xs[None, :], shape).astype(np.float32)
    map_y = np.broadcast_to(ys[:, None], shape).astype(np.float32)
    return cv2.remap(tile, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def smoothstep(edge0, edge1, x):
    """Hermite step from 0 at edge0 to 1 at edge1."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0, 1)
    return t * t * (3 - 2 * t)


# ---------------------------------------------------------------------------------------------------- the plan

@dataclass
class Camera:
    """Per-night camera: lens, exposure, noise and compression (varied so models don't learn one camera)."""
    fisheye: Fisheye
    max_exposure_s: float
    gain: int
    sky_dn: float              # dark-sky background in a full exposure at the zenith
    star_zero_point: float     # peak DN of a magnitude-0 star
    psf_sigma: float
    read_noise: float          # DN
    sky_noise: float           # total noise (DN) on this night's typical sky level; sets the shot-noise gain
    black_level: float         # sensor pedestal (outside the lens circle is not pure black)
    smoothing: float           # camera noise reduction before JPEG (Gaussian sigma, 0 = none)
    jpeg_quality: int
    white_balance: tuple[float, float, float]   # B, G, R multipliers
    vignetting: float
    watermark_scale: float
    watermark_colour: tuple[int, int, int]
    hot_pixels: np.ndarray = field(repr=False)  # (n, 4): x, y, channel (-1 = all), DN


@dataclass
class Event:
    """A transient: per frame it draws one polyline with per-point brightness."""
    kind: str
    frames: list[int]
    start: np.ndarray          # image x, y where the trail starts in its first frame
    velocity: np.ndarray       # pixels per frame interval (satellites, planes)
    length: float              # trail length in its frame (meteors, fireballs, insects)
    width: float               # Gaussian sigma, pixels
    peak_snr: float            # requested peak over local noise (before clouds and horizon)
    colour: tuple[float, float, float]
    curvature: float = 0.0
    blink_period_px: float = 0.0
    flares: list[tuple[float, float]] = field(default_factory=list)
    direction: np.ndarray | None = None   # a single-frame event's unit direction; None: drawn from its start point


@dataclass
class NightPlan:
    """Everything random about a night, drawn once from its seed."""
    seed: int
    scenario: str
    start: datetime
    frames: int
    interval_s: int
    latitude: float
    utc_offset_h: float
    lst_start_deg: float
    camera: Camera
    light_pollution: tuple[float, float, float]  # azimuth, strength (DN), spread
    airglow: float
    moon: dict
    cloud_schedule: np.ndarray = field(repr=False)   # cover fraction per frame
    cloud_wind: tuple[float, float, float, float] = (0, 0, 0, 0)
    cloud_brightness: float = 1.0
    stars: np.ndarray = field(repr=False, default=None)          # (n, 5): ra, dec, magnitude, colour index, twinkle
    horizon: np.ndarray = field(repr=False, default=None)        # altitude of the skyline per 0.1° of azimuth
    events: list[Event] = field(default_factory=list)
    sensor_temp: float = 40.0


def draw_camera(rng: np.random.Generator) -> Camera:
    """A plausible AllSky camera with this night's noise and compression settings."""
    radius = rng.uniform(0.44, 0.53) * HEIGHT
    fisheye = Fisheye(cx=WIDTH / 2 + rng.normal(0, 12), cy=HEIGHT / 2 + rng.normal(0, 8), radius=radius,
                      rotation=rng.uniform(0, 360), mirrored=bool(rng.random() < 0.85))
    hot = np.column_stack([rng.integers(0, WIDTH, 250), rng.integers(0, HEIGHT, 250),
                           rng.choice([-1, 0, 1, 2], 250), rng.uniform(8, 160, 250)])
    hot = hot[: int(rng.integers(30, 250))]
    grey = rng.uniform(150, 255)
    sky_dn = rng.uniform(12, 45)
    dark_noise = rng.uniform(1.9, 4.0)                  # noise on the typical sky: real cameras show 2.5–4 DN
    read_noise = rng.uniform(1.0, 0.8 * dark_noise)
    return Camera(
        fisheye=fisheye, max_exposure_s=float(rng.choice([20.0, 25.0, 28.0, 30.0])), gain=int(rng.choice([150, 200, 250, 300])),
        sky_dn=sky_dn, star_zero_point=rng.uniform(1500, 7000), psf_sigma=rng.uniform(0.7, 1.3),
        read_noise=read_noise, sky_noise=dark_noise,
        black_level=rng.uniform(2, 14),
        smoothing=float(rng.choice([0.0, 0.0, rng.uniform(0.4, 1.2)])), jpeg_quality=int(rng.integers(55, 96)),
        white_balance=(rng.uniform(0.85, 1.1), 1.0, rng.uniform(0.9, 1.15)), vignetting=rng.uniform(0.15, 0.45),
        watermark_scale=rng.uniform(0.55, 0.8), watermark_colour=(int(grey), int(grey), int(grey)),
        hot_pixels=hot.astype(np.float32))


def draw_stars(rng: np.random.Generator, count: int = 16000) -> np.ndarray:
    """Stars over the whole sphere: magnitudes with N(<m) ∝ 10^(0.45 m), faint ones crowding the galactic plane."""
    u = rng.random(count)
    magnitudes = 7.6 + np.log10(np.maximum(u, 1e-6)) / 0.45
    magnitudes = np.clip(magnitudes, -1.4, 7.6)
    positions = rng.standard_normal((count * 3, 3))
    positions /= np.linalg.norm(positions, axis=1, keepdims=True)
    pole = unit_vector(*GALACTIC_POLE)
    sin_b = np.abs(positions @ pole)
    keep = rng.random(count * 3) < 0.35 + 0.65 * np.exp(-(sin_b / 0.25) ** 2)
    positions = positions[keep][:count]
    count = len(positions)
    ra = np.degrees(np.arctan2(positions[:, 1], positions[:, 0])) % 360
    dec = np.degrees(np.arcsin(positions[:, 2]))
    colour = np.clip(rng.normal(0.6, 0.45, count), -0.3, 1.9)       # B−V
    twinkle = rng.uniform(0.02, 0.12, count)
    return np.column_stack([ra, dec, magnitudes[:count], colour, twinkle]).astype(np.float32)


def draw_horizon(rng: np.random.Generator) -> np.ndarray:
    """Skyline altitude (degrees) per 0.1° of azimuth: hills, tree clumps with ragged crowns, buildings, a pole."""
    az = np.arange(3600) / 10.0
    skyline = np.full(3600, rng.uniform(-2, 3), dtype=np.float64)
    for _ in range(int(rng.integers(1, 4))):                         # rolling hills
        skyline += rng.uniform(0.5, 3) * np.cos(np.radians(az * rng.integers(1, 4) + rng.uniform(0, 360)))
    ragged = fractal_noise(rng, (1, 3600), beta=1.9)[0]
    for _ in range(int(rng.integers(2, 9))):                         # tree clumps
        centre, half, height = rng.uniform(0, 360), rng.uniform(4, 35), rng.uniform(5, 28)
        distance = np.abs((az - centre + 180) % 360 - 180) / half
        crown = height * np.clip(1 - distance ** 2, 0, 1) ** 0.4 * (0.8 + 0.2 * ragged)
        skyline = np.maximum(skyline, crown)
    for _ in range(int(rng.integers(0, 3))):                         # buildings
        left, width, height = rng.uniform(0, 360), rng.uniform(3, 20), rng.uniform(4, 14)
        inside = ((az - left) % 360) < width
        skyline[inside] = np.maximum(skyline[inside], height)
    if rng.random() < 0.4:                                           # a pole or mast
        left = rng.uniform(0, 360)
        skyline[((az - left) % 360) < rng.uniform(0.4, 1.2)] = rng.uniform(20, 45)
    return skyline.astype(np.float32)


def draw_moon(rng: np.random.Generator, scenario: str, lst_start: float, latitude: float) -> dict:
    """Moon phase (illuminated fraction) and equatorial position; moonlit skies have a bright moon up."""
    if scenario in MOONLIT:
        phase = rng.uniform(0.45, 1.0)
        ha = rng.uniform(-70, 10)
        dec = rng.uniform(-15, 25)
    else:
        phase = float(rng.choice([0.0, rng.uniform(0.0, 0.35), rng.uniform(0.0, 1.0)], p=[0.4, 0.35, 0.25]))
        ha = rng.uniform(-180, 180)
        dec = rng.uniform(-28, 28)
    return {"phase": float(phase), "ra": float((lst_start - ha) % 360), "dec": float(dec)}


def draw_cloud_schedule(rng: np.random.Generator, scenario: str, frames: int) -> np.ndarray:
    """Cloud cover (0–1) per frame: smooth random fronts whose typical level depends on the scenario."""
    knots = max(3, frames // 60 + 2)
    low, high, clear_share = CLOUD_LEVELS[scenario]
    levels = rng.uniform(low, high, knots)
    if clear_share:
        levels = np.where(rng.random(knots) < clear_share, 0.0, levels)
    schedule = np.interp(np.arange(frames), np.linspace(0, frames - 1, knots), levels)
    return np.clip(schedule, 0, 1).astype(np.float32)


def sky_point(rng: np.random.Generator, plan: NightPlan, margin_alt: float = 8.0) -> np.ndarray:
    """A random image point in the open sky (above the skyline by a margin), uniform over the image circle."""
    fisheye = plan.camera.fisheye
    for _ in range(200):
        r = fisheye.radius * math.sqrt(rng.random())
        theta = rng.uniform(0, 2 * math.pi)
        x, y = fisheye.cx + r * math.cos(theta), fisheye.cy + r * math.sin(theta)
        alt, az = fisheye.unproject(x, y)
        if alt > plan.horizon[int(az * 10) % 3600] + margin_alt:
            return np.array([x, y], dtype=np.float32)
    return np.array([fisheye.cx, fisheye.cy], dtype=np.float32)


def random_direction(rng: np.random.Generator) -> np.ndarray:
    """A unit vector pointing anywhere."""
    angle = rng.uniform(0, 2 * math.pi)
    return np.array([math.cos(angle), math.sin(angle)], dtype=np.float32)


def draw_meteor(rng, plan, frame, fireball=False) -> Event:
    """A meteor (or fireball) in one frame: random position, direction, length and brightness."""
    if fireball:
        length, width = rng.uniform(150, 520), rng.uniform(1.6, 3.5)
        snr = rng.uniform(60, 250)
        flares = [(rng.uniform(0.3, 0.95), rng.uniform(1.5, 4.0)) for _ in range(int(rng.integers(0, 4)))]
        colour = (rng.uniform(0.7, 1.0), 1.0, rng.uniform(0.6, 1.0))
    else:
        length = float(np.exp(rng.uniform(math.log(20), math.log(400))))
        width = rng.uniform(0.7, 1.6)
        snr = float(np.exp(rng.uniform(math.log(MIN_VISIBLE_SNR), math.log(100))))
        flares = [(rng.uniform(0.4, 0.9), rng.uniform(1.2, 2.5))] if rng.random() < 0.25 else []
        colour = (rng.uniform(0.75, 1.0), 1.0, rng.uniform(0.75, 1.0))
    start = sky_point(rng, plan)
    return Event("fireball" if fireball else "meteor", [frame], start, np.zeros(2, np.float32), length, width, snr,
                 colour, curvature=rng.normal(0, 0.01), flares=flares)


def draw_crossing(rng, plan, frame, kind) -> Event:
    """A satellite (steady, 2–4 frames) or plane (blinking, many frames) crossing the sky in a straight line."""
    if kind == "satellite":
        duration, speed = int(rng.integers(2, 5)), rng.uniform(50, 260)
        width, snr, colour, blink = rng.uniform(0.7, 1.3), float(np.exp(rng.uniform(math.log(2), math.log(40)))), \
            (1.0, 1.0, 1.0), 0.0
    else:
        duration, speed = int(rng.integers(4, 16)), rng.uniform(50, 260)
        width, snr, colour = rng.uniform(0.8, 1.4), rng.uniform(6, 80), (1.0, 1.0, 1.0)
        blink = speed / 30.0 * rng.uniform(1.0, 1.6)          # strobe every 1–1.6 s of the 30 s interval
    start = sky_point(rng, plan, margin_alt=0)
    frames = [f for f in range(frame, frame + duration) if f < plan.frames]
    return Event(kind, frames, start, random_direction(rng) * speed, 0.0, width, snr, colour, blink_period_px=blink)


def draw_insect(rng, plan, frame) -> Event:
    """An out-of-focus insect near the lens: a wide, soft, curved smear."""
    return Event("insect", [frame], sky_point(rng, plan, margin_alt=-5), np.zeros(2, np.float32),
                 rng.uniform(30, 300), rng.uniform(3, 12), rng.uniform(3, 40), (1.0, 1.0, 0.9),
                 curvature=rng.normal(0, 0.6))


def draw_events(rng: np.random.Generator, plan: NightPlan, rates: Rates) -> list[Event]:
    """Poisson-distributed events over the night."""
    events = []
    for frame in range(plan.frames):
        for kind, rate in asdict(rates).items():
            for _ in range(rng.poisson(rate)):
                if kind in ("meteor", "fireball"):
                    events.append(draw_meteor(rng, plan, frame, fireball=kind == "fireball"))
                elif kind in ("satellite", "plane"):
                    events.append(draw_crossing(rng, plan, frame, kind))
                else:
                    events.append(draw_insect(rng, plan, frame))
    return events


def plan_night(seed: int, start: datetime, frames: int, scenario: str = "mixed", rates: Rates | None = None,
               interval_s: int = allsky.FRAME_INTERVAL_S) -> NightPlan:
    """Draw every random choice of a night from its seed."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    rng = np.random.default_rng(seed)
    # "mixed" draws among the skies of simulator 1.1 only, so that its seeds still give the same nights
    chosen = scenario if scenario != "mixed" else str(rng.choice(["clear", "cloudy", "moon", "mixed"],
                                                                  p=[0.3, 0.3, 0.2, 0.2]))
    latitude = rng.uniform(25, 58)
    utc_offset_h = rng.uniform(0.3, 2.2)     # local clock minus local mean solar time (time zone, longitude)
    lst_start = local_sidereal_time(start, utc_offset_h)
    plan = NightPlan(
        seed=seed, scenario=chosen, start=start, frames=frames, interval_s=interval_s, latitude=latitude,
        utc_offset_h=utc_offset_h, lst_start_deg=lst_start, camera=draw_camera(rng),
        light_pollution=(rng.uniform(0, 360), rng.uniform(2, 40), rng.uniform(12, 35)),
        airglow=rng.uniform(0.15, 0.5), moon=draw_moon(rng, chosen, lst_start, latitude),
        cloud_schedule=draw_cloud_schedule(rng, chosen, frames),
        cloud_wind=(rng.normal(0, 1.2), rng.normal(0, 1.2), rng.uniform(8, 40), rng.uniform(0.6, 1.6)),
        cloud_brightness=rng.uniform(0.6, 1.6), stars=draw_stars(rng), horizon=draw_horizon(rng),
        sensor_temp=rng.uniform(15, 55))
    plan.events = draw_events(rng, plan, rates or Rates())
    return plan


# ---------------------------------------------------------------------------------------------------- rendering

class NightRenderer:
    """Renders frames of one planned night; built once per worker process."""

    def __init__(self, plan: NightPlan):
        self.plan = plan
        cam = plan.camera
        self.low_shape = (HEIGHT // LOW, WIDTH // LOW)
        ly, lx = np.mgrid[0:self.low_shape[0], 0:self.low_shape[1]].astype(np.float32)
        self.low_alt, self.low_az = cam.fisheye.unproject((lx + 0.5) * LOW - 0.5, (ly + 0.5) * LOW - 0.5)
        self.low_ha, self.low_dec = horizontal_to_equatorial(self.low_alt, self.low_az, plan.latitude)
        fy, fx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
        alt, az = cam.fisheye.unproject(fx, fy)
        skyline = plan.horizon[(az * 10).astype(np.int32) % 3600]
        self.sky_mask = np.clip(alt - skyline + 0.5, 0, 1).astype(np.float32)        # 1 sky, 0 ground/outside
        self.inside = np.clip(alt + 0.3, 0, 1).astype(np.float32)                     # the lens circle
        self.low_sky_mask = cv2.resize(self.sky_mask, self.low_shape[::-1], interpolation=cv2.INTER_AREA)
        zenith = np.clip(90 - self.low_alt, 0, 90)
        self.low_vignette = (1 - cam.vignetting * (zenith / 90) ** 2).astype(np.float32)
        self.low_vanrhijn = (1 / np.sqrt(1 - 0.96 * np.sin(np.radians(zenith)) ** 2)).astype(np.float32)
        rng = np.random.default_rng([plan.seed, 999_999])
        self.cloud_tiles = [fractal_noise(rng, (384, 512), beta=3.4), fractal_noise(rng, (384, 512), beta=3.0)]
        self.milky_texture = fractal_noise(rng, (180, 360), beta=2.6)
        self.ground_texture = cv2.resize(fractal_noise(rng, (244, 326), beta=2.0), (WIDTH, HEIGHT))
        self.electrons_per_dn = self.calibrate_gain()

    def calibrate_gain(self) -> float:
        """Shot-noise gain that gives the camera's nominal noise on the night's typical (mid-night, clear) sky."""
        cam, middle = self.plan.camera, self.plan.frames // 2
        moon_alt, moon_az = self.moon_position(middle)
        rate, zenith_rate = self.sky(middle, np.zeros(self.low_shape, np.float32), moon_alt, moon_az, -90.0, 0.0)
        level = float(np.median(rate.mean(axis=2)[self.low_sky_mask > 0.9])) * self.exposure(zenith_rate)
        return max(level, 1.0) / max(cam.sky_noise ** 2 - cam.read_noise ** 2, 0.25)

    # --- time-dependent state ----------------------------------------------------------------------------------
    def time_of(self, index: int) -> datetime:
        return self.plan.start + timedelta(seconds=self.plan.interval_s * index)

    def lst(self, index: int) -> float:
        return (self.plan.lst_start_deg + SIDEREAL_DEG_PER_S * self.plan.interval_s * index) % 360

    def moon_position(self, index: int) -> tuple[float, float]:
        moon = self.plan.moon
        ra = moon["ra"] + 0.5 / 3600 * self.plan.interval_s * index      # the moon drifts east ~0.5°/h
        alt, az = equatorial_to_horizontal(self.lst(index) - ra, moon["dec"], self.plan.latitude)
        return float(alt), float(az)

    def exposure(self, sky_rate: float) -> float:
        """Auto-exposure: full exposure at night, shorter when the sky is bright (twilight, full moon)."""
        cam = self.plan.camera
        target = 110.0
        full = sky_rate * cam.max_exposure_s
        return cam.max_exposure_s if full <= target else max(cam.max_exposure_s * target / full, MIN_EXPOSURE_S)

    # --- layers --------------------------------------------------------------------------------------------------
    def clouds(self, index: int, cover: float) -> np.ndarray:
        """Cloud optical density (0–1) at low resolution: two drifting fractal layers that evolve over time."""
        if cover <= 0.01:
            return np.zeros(self.low_shape, np.float32)
        wx, wy, period_frames, scale = self.plan.cloud_wind
        a = sample_tile(self.cloud_tiles[0], self.low_shape, wx * index, wy * index, scale)
        b = sample_tile(self.cloud_tiles[1], self.low_shape, -0.6 * wy * index + 77, 0.8 * wx * index + 31, scale * 0.7)
        phase = 2 * math.pi * index / (period_frames * 10)
        field_ = math.cos(phase) * a + math.sin(phase) * b * 0.8 + 0.35 * a * b
        level = np.quantile(field_, 1 - cover)
        return (smoothstep(level - 0.2, level + 0.9, field_) * min(1.0, cover * 2.5 + 0.15)).astype(np.float32)

    def milky_way(self, lst: float) -> np.ndarray:
        """Milky Way surface brightness (relative) at low resolution."""
        v = unit_vector(lst - self.low_ha, self.low_dec)
        pole, centre = unit_vector(*GALACTIC_POLE), unit_vector(*GALACTIC_CENTRE)
        sin_b = v @ pole
        y_axis = np.cross(pole, centre)
        lon = np.degrees(np.arctan2(v @ y_axis, v @ centre)) % 360
        lat = np.degrees(np.arcsin(np.clip(sin_b, -1, 1)))
        map_x, map_y = lon.astype(np.float32) % 360, np.clip(lat + 90, 0, 179).astype(np.float32)
        texture = cv2.remap(self.milky_texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        core = np.exp(-(lat / 9.0) ** 2) * (0.45 + 0.55 * np.cos(np.radians(lon / 2)) ** 2)
        rift = 1 - 0.45 * np.exp(-((lat - 1.5) / 2.5) ** 2) * (np.cos(np.radians(lon)) > 0.2)
        return (core * rift * (1 + 0.45 * texture)).clip(0).astype(np.float32)

    def sky(self, index: int, clouds: np.ndarray, moon_alt: float, moon_az: float, sun_alt: float, sun_az: float):
        """Background light per unit exposure (DN/s, BGR, low resolution) and the zenith rate for auto-exposure."""
        plan, cam = self.plan, self.plan.camera
        per_s = cam.sky_dn / cam.max_exposure_s
        alt, az = self.low_alt, self.low_az
        airglow = per_s * self.low_vanrhijn * (1 + 0.3 * plan.airglow)
        lp_az, lp_strength, lp_spread = plan.light_pollution
        toward_lp = 0.5 + 0.5 * np.cos(np.radians(az - lp_az))
        lp = lp_strength / cam.max_exposure_s * np.exp(-np.clip(alt, 0, 90) / lp_spread) * (0.3 + 0.7 * toward_lp ** 2)
        twilight = np.zeros_like(alt)
        if sun_alt > -18:
            strength = per_s * (10 ** (0.4 * min(sun_alt + 18, 24)) - 1)     # ~6 magnitudes per 15° of sun altitude
            toward_sun = 0.5 + 0.5 * np.cos(np.radians(az - sun_az))
            twilight = strength * (0.25 + 0.75 * toward_sun ** 3 * np.exp(-np.clip(alt, 0, 90) / 30))
        moonlight = np.zeros_like(alt)
        if moon_alt > -2 and plan.moon["phase"] > 0.02:
            brightness = per_s * 6.0 * plan.moon["phase"] ** 2 * smoothstep(-2, 8, moon_alt)
            cos_sep = (np.sin(np.radians(alt)) * math.sin(math.radians(moon_alt))
                       + np.cos(np.radians(alt)) * math.cos(math.radians(moon_alt)) * np.cos(np.radians(az - moon_az)))
            separation = np.degrees(np.arccos(np.clip(cos_sep, -1, 1)))
            moonlight = brightness * (0.6 + 1.2 * (1 + np.cos(np.radians(separation)) ** 2) / 2
                                      + 30 / (separation + 4)) * self.low_vanrhijn
        milky = per_s * 0.6 * self.milky_way(self.lst(index)) * (1 - clouds)
        colours = {"airglow": (1.0, 1.05, 0.95), "lp": (0.55, 0.8, 1.0), "twilight": (1.25, 1.0, 0.75),
                   "moon": (1.15, 1.0, 0.85), "milky": (1.0, 1.0, 1.0)}
        clear = [(airglow, colours["airglow"]), (lp, colours["lp"]), (twilight, colours["twilight"]),
                 (moonlight, colours["moon"]), (milky, colours["milky"])]
        rate = np.zeros(self.low_shape + (3,), np.float32)
        for layer, tint in clear:
            rate += layer[..., None] * np.array(tint, np.float32)
        # clouds scatter light pollution, moonlight and twilight back down and hide what is behind them
        cloud_light = plan.cloud_brightness * (2.5 * lp + 1.6 * moonlight + 0.8 * twilight + 0.6 * airglow)
        rate = rate * (1 - 0.55 * clouds[..., None]) + (clouds * cloud_light)[..., None] * np.array(
            (0.7, 0.85, 1.0), np.float32)
        rate *= self.low_vignette[..., None]
        zenith_rate = float(per_s + (twilight.max() if sun_alt > -18 else 0) * 0.5 + moonlight.mean())
        return rate, zenith_rate

    def star_layer(self, index: int, clouds: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
        """Point sources (stars) splatted with a Gaussian PSF into a full-resolution BGR image."""
        plan, cam = self.plan, self.plan.camera
        stars = plan.stars
        alt, az = equatorial_to_horizontal(self.lst(index) - stars[:, 0], stars[:, 1], plan.latitude)
        up = alt > 0
        alt, az, mag, bv, twinkle = alt[up], az[up], stars[up, 2], stars[up, 3], stars[up, 4]
        x, y = cam.fisheye.project(alt, az)
        airmass = 1 / np.maximum(np.sin(np.radians(alt + 244 / (165 + 47 * alt ** 1.1))), 0.05)
        peak = cam.star_zero_point * 10 ** (-0.4 * (mag + 0.25 * (airmass - 1)))
        peak *= np.exp(rng.normal(0, 1, len(peak)) * twinkle * np.sqrt(airmass))         # scintillation
        low_x = np.clip((x / LOW).astype(int), 0, self.low_shape[1] - 1)
        low_y = np.clip((y / LOW).astype(int), 0, self.low_shape[0] - 1)
        peak *= np.exp(-4.0 * clouds[low_y, low_x]) * scale
        visible = peak > 0.05
        return splat(x[visible], y[visible], peak[visible], star_tint(bv[visible]), cam.psf_sigma)

    def moon_layer(self, moon_alt: float, moon_az: float, scale: float) -> np.ndarray:
        """The moon's disk and its lens glare (saturating core, wide halo, a faint ghost opposite)."""
        image = np.zeros((HEIGHT, WIDTH), np.float32)
        phase = self.plan.moon["phase"]
        if moon_alt <= -1 or phase < 0.02:
            return image
        cam = self.plan.camera
        x, y = cam.fisheye.project(moon_alt, moon_az)
        brightness = 4000 * phase ** 1.5 * min(1.0, scale * 30)
        cv2.circle(image, (int(round(x * 4)), int(round(y * 4))), int(4 * 4 * max(phase, 0.3)), brightness,
                   -1, cv2.LINE_AA, shift=2)
        x0, y0 = max(int(x) - 160, 0), max(int(y) - 160, 0)
        x1, y1 = min(int(x) + 161, WIDTH), min(int(y) + 161, HEIGHT)
        if x1 > x0 and y1 > y0:
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            distance = np.hypot(xx - x, yy - y)
            image[y0:y1, x0:x1] += brightness * (0.08 * np.exp(-(distance / 12) ** 2) + 0.004 / (1 + (distance / 40) ** 2))
        ghost_x, ghost_y = 2 * cam.fisheye.cx - x, 2 * cam.fisheye.cy - y
        cv2.circle(image, (int(ghost_x), int(ghost_y)), 9, brightness * 0.0015, -1, cv2.LINE_AA)
        return image

    # --- events --------------------------------------------------------------------------------------------------
    def event_trail(self, event: Event, index: int, exposed: float):
        """Polyline points and relative brightness of an event in frame `index`, or None."""
        if index not in event.frames:
            return None
        if event.kind in ("satellite", "plane"):
            step = index - event.frames[0]
            a = event.start + event.velocity * step
            b = a + event.velocity * exposed
            length = float(np.hypot(*(b - a)))
            n = max(int(length * 2), 2)
            t = np.linspace(0, 1, n, dtype=np.float32)
            points = a[None, :] + (b - a)[None, :] * t[:, None]
            brightness = np.ones(n, np.float32)
            if event.kind == "satellite":
                brightness *= 1 + 0.15 * np.sin(t * rng_phase(event) * 6)
            else:
                along = t * length
                strobe = ((along % event.blink_period_px) < 0.2 * event.blink_period_px).astype(np.float32)
                brightness = 0.12 + 2.5 * strobe
            return points, brightness
        direction = event_direction(event)
        n = max(int(event.length * 2), 2)
        t = np.linspace(0, 1, n, dtype=np.float32)
        normal = np.array([-direction[1], direction[0]], np.float32)
        bend = event.curvature * event.length * (t - t ** 2)[:, None] * normal[None, :]
        points = event.start[None, :] + direction[None, :] * (t * event.length)[:, None] + bend
        if event.kind == "insect":
            brightness = 0.5 + 0.5 * np.sin(np.pi * t)
        else:   # rise and fade: quick rise, peak late, faster fade (a beta-like light curve)
            brightness = (t ** 1.5) * (1 - t) ** 0.7
            brightness /= brightness.max()
            for where, gain in event.flares:
                brightness += gain * np.exp(-((t - where) / 0.03) ** 2)
            brightness /= brightness.max()
        return points, brightness.astype(np.float32)

    def render_events(self, index: int, noise_sigma: np.ndarray, clouds_full: np.ndarray, exposure: float):
        """Event light (BGR) for this frame behind the skyline (what the sky/ground blend hides below it) and in front
        of it (insects near the lens), and a ground-truth record per event. A satellite or plane moves as far as the
        share of the frame interval the shutter was open; a meteor shows the part of its path flown while open."""
        behind = np.zeros((HEIGHT, WIDTH, 3), np.float32)
        in_front = np.zeros((HEIGHT, WIDTH, 3), np.float32)
        records = []
        exposed = min(exposure + 0.5, self.plan.interval_s - 1) / self.plan.interval_s
        for event in self.plan.events:
            trail = self.event_trail(event, index, exposed)
            if trail is None:
                continue
            points, brightness = trail
            x0, y0 = points[0]
            xi, yi = int(np.clip(x0, 0, WIDTH - 1)), int(np.clip(y0, 0, HEIGHT - 1))
            amplitude = event.peak_snr * float(noise_sigma[yi, xi])
            if event.kind == "fireball":
                amplitude = max(amplitude, 320.0)
            if event.kind in ("meteor", "fireball"):
                trail = flown_while_open(event, points, brightness, exposure)
                if trail is None:
                    continue                               # a dot at most: nothing to record
                points, brightness = trail
            light = splat_line(points, brightness * amplitude, event.width)
            if event.kind == "fireball":   # glare around the head and a sky-wide flash
                light += splat_line(points, brightness * amplitude * 0.06, event.width * 6)
            colour = np.array(event.colour, np.float32)
            if event.kind == "insect":     # near the lens: in front of the trees, behind nothing but the lens rim
                light *= self.inside
                in_front += light[..., None] * colour
            else:
                light *= self.sky_mask * np.exp(-3.0 * clouds_full)
                behind += light[..., None] * colour
            if event.kind == "plane":   # steady red and green navigation lights beside the strobe
                heading = event.velocity / (np.linalg.norm(event.velocity) + 1e-6)
                across = np.array([-heading[1], heading[0]], np.float32)
                for offset, tint in ((1.5, (0.1, 0.15, 1.0)), (-1.5, (0.2, 1.0, 0.3))):   # red and green wingtips
                    shifted = points + offset * across
                    nav = splat_line(shifted, np.full(len(points), amplitude * 0.25, np.float32), 0.9)
                    behind += (nav * self.sky_mask * np.exp(-3.0 * clouds_full))[..., None] * np.array(tint, np.float32)
            shown = shown_part(points, self.inside if event.kind == "insect" else self.sky_mask)
            box = footprint(light)
            drawn = light[box] if event.kind == "insect" else light[box] * self.sky_mask[box]   # after the blend
            records.append({"kind": event.kind, "x1": float(shown[0, 0]), "y1": float(shown[0, 1]),
                            "x2": float(shown[-1, 0]), "y2": float(shown[-1, 1]),
                            "length_px": float(np.sum(np.hypot(*np.diff(shown, axis=0).T))),
                            "width_px": float(event.width), "light": (box, drawn, colour)})   # for measure_shown
        return behind, in_front, records

    # --- the frame -----------------------------------------------------------------------------------------------
    def render(self, index: int) -> tuple[np.ndarray, dict]:
        """One frame (BGR uint8, before JPEG) and its ground-truth row."""
        plan, cam = self.plan, self.plan.camera
        rng = np.random.default_rng([plan.seed, index])
        stamp = self.time_of(index)
        sun_alt, sun_az = sun_position(stamp, plan.latitude, plan.utc_offset_h)
        moon_alt, moon_az = self.moon_position(index)
        cover = float(plan.cloud_schedule[index])
        clouds = self.clouds(index, cover) * self.low_sky_mask
        rate, zenith_rate = self.sky(index, clouds, moon_alt, moon_az, sun_alt, sun_az)
        exposure = self.exposure(zenith_rate)
        background = cv2.resize(rate * exposure, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
        clouds_full = cv2.resize(clouds, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
        signal = background + self.star_layer(index, clouds, exposure / cam.max_exposure_s, rng)
        signal[..., :] += (self.moon_layer(moon_alt, moon_az, exposure / cam.max_exposure_s))[..., None]
        noise_sigma = self.noise(signal)
        behind, in_front, records = self.render_events(index, noise_sigma, clouds_full, exposure)
        signal += behind
        ground = (0.25 + 0.08 * self.ground_texture)[..., None] * channel_mean(background)[..., None] * 0.5
        signal = signal * self.sky_mask[..., None] + ground * (1 - self.sky_mask[..., None]) * self.inside[..., None]
        signal += in_front
        signal *= np.array(cam.white_balance, np.float32)
        self.measure_shown(records, signal, noise_sigma)
        image = self.sensor(signal, self.noise(signal), rng)
        self.watermark(image, stamp, exposure, index, rng)
        return image, self.truth_row(stamp, records, noise_sigma, cover, moon_alt, sun_alt, exposure)

    def measure_shown(self, records: list[dict], signal: np.ndarray, noise_sigma: np.ndarray) -> None:
        """Each event's peak as the frame shows it, over all its light: what survives the 8-bit clip where the sky
        saturates (daytime, the moon), the light itself elsewhere. A meteor on a saturated sky adds nothing to the
        frame, so its ground truth must not call it visible; one crossing the saturated moon shows beside it. Also
        the most the event adds to the gray frame (`gray_peak`: its colour, white balance and luma), before noise."""
        cam = self.plan.camera
        ceiling = 255.0 - cam.black_level
        for record in records:
            box, light, colour = record.pop("light")
            added = light[..., None] * (colour * np.array(cam.white_balance, np.float32))
            total = signal[box]
            shown = np.clip(total, 0, ceiling) - np.clip(total - added, 0, ceiling)
            kept = np.divide(shown.sum(axis=2), added.sum(axis=2), out=np.zeros_like(light),
                             where=added.sum(axis=2) > 0)
            seen = np.where((total > ceiling).any(axis=2), light * kept, light)
            peak = np.unravel_index(np.argmax(seen), seen.shape)
            record["peak_dn"] = float(seen[peak])
            record["peak_snr"] = record["peak_dn"] / float(noise_sigma[box][peak] + 1e-6)
            record["gray_peak"] = float((shown @ GRAY_WEIGHTS).max())

    def noise(self, signal: np.ndarray) -> np.ndarray:
        """Per-pixel noise sigma (DN): read noise plus shot noise of the signal."""
        luminance = np.maximum(channel_mean(signal), 0)
        return np.sqrt(self.plan.camera.read_noise ** 2 + luminance / self.electrons_per_dn)

    def sensor(self, signal: np.ndarray, sigma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Shot and read noise (luminance plus demosaiced chroma), hot pixels, noise reduction, 8-bit clip."""
        cam = self.plan.camera
        noisy = signal + (rng.standard_normal((HEIGHT, WIDTH), dtype=np.float32) * sigma * 0.85)[..., None]
        chroma = rng.standard_normal((HEIGHT // 2, WIDTH // 2, 3), dtype=np.float32)
        noisy += cv2.resize(chroma, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR) * (sigma * 0.6)[..., None]
        hot = cam.hot_pixels
        xs, ys, channels, values = hot[:, 0].astype(int), hot[:, 1].astype(int), hot[:, 2].astype(int), hot[:, 3]
        flicker = values * (1 + 0.05 * rng.standard_normal(len(values)))
        for channel in range(3):
            chosen = (channels == -1) | (channels == channel)
            noisy[ys[chosen], xs[chosen], channel] += flicker[chosen]
        if cam.smoothing > 0:
            noisy = cv2.GaussianBlur(noisy, (0, 0), cam.smoothing)
        return np.clip(noisy + cam.black_level + 0.5, 0, 255).astype(np.uint8)

    def watermark(self, image: np.ndarray, stamp: datetime, exposure: float, index: int, rng) -> None:
        """AllSky's top-left text: date and time, exposure, gain, sensor temperature (changes every frame)."""
        cam = self.plan.camera
        temperature = self.plan.sensor_temp + 2.5 * math.sin(index / 180) + rng.normal(0, 0.3)
        lines = [stamp.strftime("%Y-%m-%d %H:%M:%S"), f"Exposure: {exposure:.6f} s", f"Gain: {cam.gain}",
                 f"Sensor: {temperature:.1f} C"]
        step = int(28 * cam.watermark_scale / 0.7)
        for row, text in enumerate(lines):
            cv2.putText(image, text, (12, 26 + row * step), cv2.FONT_HERSHEY_SIMPLEX, cam.watermark_scale,
                        cam.watermark_colour, 1, cv2.LINE_AA)

    def truth_row(self, stamp, records, noise_sigma, cover, moon_alt, sun_alt, exposure) -> dict:
        """The ground-truth row of a frame: the main (most important) visible event and all others."""
        for record in records:
            if record["kind"] in ("meteor", "fireball") and (record["peak_snr"] < MIN_VISIBLE_SNR
                                                             or record["gray_peak"] <= MIN_VISIBLE_GRAY_DN):
                record["kind"] = "hidden-meteor"    # behind clouds or trees, or too faint: nothing a person could label
        records = [r for r in records if r["kind"] in ("meteor", "fireball", "hidden-meteor")
                   or r["peak_snr"] >= MIN_SHOWN_SNR]       # out of the frame, behind trees or cloud, clipped
        ranked = sorted(records, key=lambda r: (EVENT_PRIORITY.index(r["kind"]) if r["kind"] in EVENT_PRIORITY else 99,
                                                -r["peak_snr"]))                # the brightest of a kind first
        main = ranked[0] if ranked and ranked[0]["kind"] in EVENT_PRIORITY else None
        row = {"file": allsky.frame_name(stamp), "time": stamp.isoformat(),
               "label": "meteor" if main and main["kind"] in ("meteor", "fireball") else "no-meteor",
               "event": main["kind"] if main else "none", "events": ";".join(r["kind"] for r in ranked),
               "noise_dn": float(np.median(noise_sigma[self.sky_mask > 0.5])), "clouds": cover,
               "moon_alt": moon_alt, "sun_alt": sun_alt, "exposure_s": exposure, "scenario": self.plan.scenario}
        for key in ("x1", "y1", "x2", "y2", "length_px", "width_px", "peak_dn", "peak_snr"):
            row[key] = round(main[key], 2) if main else None
        return row


def shown_part(points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The trail points from the first to the last over `mask` (the open sky: in the frame, in the lens circle,
    above the skyline); all of them if none is (a hidden meteor)."""
    x = np.rint(points[:, 0]).astype(int)
    y = np.rint(points[:, 1]).astype(int)
    inside = (x >= 0) & (x < mask.shape[1]) & (y >= 0) & (y < mask.shape[0])
    shown = np.zeros(len(points), bool)
    shown[inside] = mask[y[inside], x[inside]] >= 0.5
    if not shown.any():
        return points
    first, last = np.flatnonzero(shown)[[0, -1]]
    return points[first:last + 1]


def footprint(light: np.ndarray) -> tuple[slice, slice]:
    """The smallest box holding all of an event's light (the corner pixel when it has none)."""
    rows, columns = np.flatnonzero(light.any(axis=1)), np.flatnonzero(light.any(axis=0))
    if not len(rows):
        return slice(0, 1), slice(0, 1)
    return slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1)


def channel_mean(image: np.ndarray) -> np.ndarray:
    """Mean over the 3 colour channels: the same float32 values as image.mean(axis=2), ten times faster."""
    return (image[..., 0] + image[..., 1] + image[..., 2]) / np.float32(3)


def rng_phase(event: Event) -> float:
    """A fixed per-event number for gentle brightness wobbles."""
    return float(abs(event.start[0] * 0.013 + event.start[1] * 0.007) % 3 + 1)


def event_direction(event: Event) -> np.ndarray:
    """A single-frame event's direction: its own (`Event.direction`: a meteor of a shower, away from the radiant), else
    a reproducible one derived from its start point."""
    if event.direction is not None:
        return np.asarray(event.direction, np.float32)
    angle = (event.start[0] * 12.9898 + event.start[1] * 78.233) % (2 * math.pi)
    return np.array([math.cos(angle), math.sin(angle)], np.float32)


def event_share(event: Event, weight_x: float, weight_y: float) -> float:
    """A reproducible number in [0, 1) derived from a single-frame event's start point, as its direction is (no draw
    from the night's random streams: every other event and frame stays the same)."""
    return float((event.start[0] * weight_x + event.start[1] * weight_y) % 1.0)


def flight_duration(event: Event) -> float:
    """Seconds a meteor or fireball takes to fly its path: its length at an apparent speed of 80–250 px/s, within
    0.2–2 s (a fireball 1–5 s)."""
    low, high = FIREBALL_DURATION_S if event.kind == "fireball" else METEOR_DURATION_S
    slow, fast = METEOR_SPEED_PX_S
    speed = slow + (fast - slow) * event_share(event, 0.7548777, 0.5698403)
    return min(max(event.length / speed, low), high)


def flown_while_open(event: Event, points: np.ndarray, brightness: np.ndarray, exposure: float):
    """The part of a meteor's trail (points and light curve) flown while the shutter was open: the whole trail when
    the exposure outlasts the flight, else a stretch of exposure / duration of it at a reproducible place along the
    path; None when that stretch is under MIN_FLOWN_PX."""
    duration = flight_duration(event)
    if exposure >= duration:
        return points, brightness
    share = exposure / duration
    if share * event.length < MIN_FLOWN_PX:
        return None
    begin = event_share(event, 0.3183099, 0.8862269) * (1 - share)
    t = np.linspace(0, 1, len(points))
    flown = (t >= begin) & (t <= begin + share)
    return points[flown], brightness[flown]


def star_tint(bv: np.ndarray) -> np.ndarray:
    """BGR tint of stars from their B−V colour index (blue-white to orange)."""
    t = np.clip((bv + 0.3) / 2.2, 0, 1)
    return np.column_stack([1.15 - 0.5 * t, 1.0 - 0.1 * t, 0.85 + 0.35 * t]).astype(np.float32)


def splat(x, y, peak, tint, sigma: float, radius: int = 3) -> np.ndarray:
    """Sum Gaussian spots of the given peak and BGR tint into a full-resolution image (sub-pixel centred)."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    if len(x) == 0:
        return image
    offsets = np.arange(-radius, radius + 1)
    ix, iy = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - ix).astype(np.float32), (y - iy).astype(np.float32)
    px = ix[:, None, None] + offsets[None, None, :]
    py = iy[:, None, None] + offsets[None, :, None]
    weight = np.exp(-(((offsets[None, None, :] - fx[:, None, None]) ** 2 + (offsets[None, :, None] - fy[:, None, None]) ** 2)
                      / (2 * sigma ** 2))) * peak[:, None, None]
    px, py = np.broadcast_to(px, weight.shape), np.broadcast_to(py, weight.shape)
    ok = (px >= 0) & (px < WIDTH) & (py >= 0) & (py < HEIGHT)
    flat = (py[ok] * WIDTH + px[ok]).ravel()
    w = weight[ok].ravel()
    tints = np.broadcast_to(tint[:, None, None, :], weight.shape + (3,))[ok]
    for channel in range(3):
        image[..., channel] = np.bincount(flat, w * tints[:, channel], minlength=HEIGHT * WIDTH).reshape(HEIGHT, WIDTH)
    return image


def splat_line(points: np.ndarray, peak: np.ndarray, sigma: float) -> np.ndarray:
    """A trail through `points` (spaced ≤ 0.5 px) whose cross-section peaks at `peak` (gray, full resolution)."""
    image = np.zeros((HEIGHT, WIDTH), np.float32)
    spacing = np.hypot(*np.diff(points, axis=0).T).mean() if len(points) > 1 else 1.0
    stride = max(1, int(sigma / (2 * spacing)))          # wide trails need fewer, larger stamps
    points, peak, spacing = points[::stride], peak[::stride], spacing * stride
    amplitude = peak * spacing / (sigma * math.sqrt(2 * math.pi))
    radius = int(math.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1)
    x, y = points[:, 0], points[:, 1]
    ix, iy = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - ix, y - iy
    px = ix[:, None, None] + offsets[None, None, :]
    py = iy[:, None, None] + offsets[None, :, None]
    weight = np.exp(-(((offsets[None, None, :] - fx[:, None, None]) ** 2 + (offsets[None, :, None] - fy[:, None, None]) ** 2)
                      / (2 * sigma ** 2))) * amplitude[:, None, None]
    px, py = np.broadcast_to(px, weight.shape), np.broadcast_to(py, weight.shape)
    ok = (px >= 0) & (px < WIDTH) & (py >= 0) & (py < HEIGHT)
    image.ravel()[:] = np.bincount((py[ok] * WIDTH + px[ok]).ravel(), weight[ok].ravel(), minlength=HEIGHT * WIDTH)
    return image


# ---------------------------------------------------------------------------------------------------- writing

_RENDERER: NightRenderer | None = None


def _init_worker(plan: NightPlan) -> None:
    global _RENDERER
    _RENDERER = NightRenderer(plan)


def _render_and_write(job: tuple[int, str]) -> dict:
    index, folder = job
    image, row = _RENDERER.render(index)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, _RENDERER.plan.camera.jpeg_quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for frame {index}")
    (Path(folder) / row["file"]).write_bytes(encoded.tobytes())
    return row


def night_frames(start: datetime, end_hhmm: str = "08:00", interval_s: int = allsky.FRAME_INTERVAL_S) -> int:
    """Frames from `start` to the next `end_hhmm` (the whole AllSky night window), or to the night's end at noon
    when that comes first (a start in the morning)."""
    hour, minute = (int(part) for part in end_hhmm.split(":"))
    end = start.replace(hour=hour, minute=minute, second=0)
    if end <= start:
        end += timedelta(days=1)
    return int((min(end, night_end(start)) - start).total_seconds() // interval_s)


def night_end(start: datetime) -> datetime:
    """Noon after the night of `start`: a frame from then on belongs to the next night's folder."""
    evening = datetime.strptime(allsky.night_of(start), allsky.NIGHT_FORMAT)
    return evening + timedelta(days=1, hours=allsky.NOON)


class SimulateError(ValueError):
    """A night that cannot be simulated as asked."""


class NightExists(SimulateError):
    """The night folder already holds frames: a second night written into it would mix two skies under one
    ground truth."""


def check_length(start: datetime, frames: int, interval_s: int = allsky.FRAME_INTERVAL_S) -> None:
    """SimulateError when the frames would run past the night's noon, into the next night's folder."""
    most = int((night_end(start) - start).total_seconds() // interval_s)
    if frames > most:
        raise SimulateError(f"{frames} frames from {start:%Y-%m-%d %H:%M} run past noon into the next night's "
                            f"folder: at most {most}")


def start_of(night_date: str, start: str) -> datetime:
    """The first frame's time: HH:MM on the evening of night_date (an after-midnight start: the morning after)."""
    hour, minute = (int(part) for part in start.split(":"))
    start_time = datetime.strptime(night_date, allsky.NIGHT_FORMAT).replace(hour=hour, minute=minute)
    return start_time + timedelta(days=1) if hour < allsky.NOON else start_time


def refuse_filled(folder: Path) -> None:
    """Raise NightExists when `folder` already holds AllSky frames; one without its night.json (written last) is a
    night cut short."""
    if not (folder.is_dir() and any(allsky.frame_time(entry.name) for entry in folder.iterdir())):
        return
    if not (folder / "night.json").is_file():
        raise NightExists(f"{folder} holds a night cut short (no night.json): remove it and run again")
    raise NightExists(f"{folder} already holds frames: simulate into another folder (--out; in the notebooks "
                      "GUALTA_NB_NIGHTS) or remove it")


def simulate_night(out_root: str | Path, night_date: str, frames: int | None = None, start: str = "20:00",
                   seed: int = 0, scenario: str = "mixed", rates: Rates | None = None,
                   workers: int | None = None, progress: bool = True) -> Path:
    """Write one night in AllSky layout (OUT/YYYYMMDD/image-*.jpg) with ground_truth.csv and night.json."""
    start_time = start_of(night_date, start)
    folder = Path(out_root) / allsky.night_of(start_time)
    refuse_filled(folder)
    frames = frames or night_frames(start_time)
    check_length(start_time, frames)
    plan = plan_night(seed, start_time, frames, scenario, rates)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(index, str(folder)) for index in range(frames)]
    workers = workers or min(os.cpu_count() or 1, 8)
    bar = dict(total=frames, desc=f"simulate {folder.name}", unit="frame", disable=not progress, leave=False)
    if workers <= 1:
        _init_worker(plan)
        rows = [_render_and_write(job) for job in tqdm(jobs, **bar)]
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(plan,)) as pool:
            rows = list(tqdm(pool.map(_render_and_write, jobs, chunksize=4), **bar))
    pd.DataFrame(rows, columns=GT_COLUMNS).to_csv(folder / "ground_truth.csv", index=False)
    (folder / "night.json").write_text(json.dumps(night_summary(plan, rows, scenario, rates), indent=2))
    return folder


def night_summary(plan: NightPlan, rows: list[dict], requested: str | None = None, rates: Rates | None = None) -> dict:
    """The night's settings and event counts, for reports and model cards; with what was asked for (the scenario,
    whose "mixed" draws the sky, and the event rates), the night can be simulated again."""
    cam = plan.camera
    counts = pd.Series([r["event"] for r in rows]).value_counts().to_dict()
    return {"simulator_version": SIMULATOR_VERSION, "seed": plan.seed, "scenario": plan.scenario,
            "scenario_requested": requested or plan.scenario, "rates": asdict(rates or Rates()),
            "start": plan.start.isoformat(), "frames": plan.frames, "interval_s": plan.interval_s,
            "latitude": round(plan.latitude, 2), "moon_phase": round(plan.moon["phase"], 3),
            "camera": {"read_noise_dn": round(cam.read_noise, 2), "sky_noise_dn": round(cam.sky_noise, 2),
                       "smoothing": round(cam.smoothing, 2), "jpeg_quality": cam.jpeg_quality,
                       "sky_dn": round(cam.sky_dn, 1), "psf_sigma": round(cam.psf_sigma, 2),
                       "max_exposure_s": cam.max_exposure_s, "gain": cam.gain},
            "frames_by_event": {k: int(v) for k, v in counts.items()},
            "meteor_frames": int(sum(r["label"] == "meteor" for r in rows))}


def default_first_date(seed: int) -> datetime:
    """A seeded date between September and March, when 20:00 is already night at the simulated latitudes."""
    return datetime(2021, 9, 1) + timedelta(days=int(np.random.default_rng(seed).integers(0, 200)))


def simulate_nights(out_root: str | Path, nights: int = 1, frames: int | None = None, start: str = "20:00",
                    seed: int = 0, scenario: str = "mixed", first_date: str | None = None,
                    workers: int | None = None, rates: Rates | None = None, keep_whole: bool = False) -> list[Path]:
    """Write `nights` consecutive nights; night i uses seed `seed + i` (each night reproducible on its own). With
    `keep_whole`, a night this request already wrote whole (its night.json, written last, says so) is kept: a run
    cut short after simulating goes on from there."""
    first = datetime.strptime(first_date, allsky.NIGHT_FORMAT) if first_date else default_first_date(seed)
    dates = [(first + timedelta(days=i)).strftime(allsky.NIGHT_FORMAT) for i in range(nights)]
    kept = {}
    for i, night_date in enumerate(dates):                                       # all refused before any is written
        night_start = start_of(night_date, start)
        folder = Path(out_root) / allsky.night_of(night_start)
        check_length(night_start, frames or 1)
        if keep_whole and written_whole(folder, seed + i, night_start, frames or night_frames(night_start),
                                        scenario, rates):
            kept[night_date] = folder
            log.info("%s kept (already simulated)", folder)
        else:
            refuse_filled(folder)
    return [kept.get(night_date) or simulate_night(out_root, night_date, frames, start, seed + i, scenario, rates,
                                                   workers)
            for i, night_date in enumerate(dates)]


def written_whole(folder: Path, seed: int, night_start: datetime, frames: int, scenario: str,
                  rates: Rates | None) -> bool:
    """Whether `folder` holds the whole night these settings simulate (its night.json, written last, says so)."""
    try:
        written = json.loads((folder / "night.json").read_text())
    except (OSError, ValueError):
        return False
    asked = {"simulator_version": SIMULATOR_VERSION, "seed": seed, "scenario_requested": scenario,
             "start": night_start.isoformat(), "frames": frames, "rates": asdict(rates or Rates())}
    return all(written.get(key) == value for key, value in asked.items())
