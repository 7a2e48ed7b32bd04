"""Session fixtures for the training tests: a tiny simulated dataset and one model trained on it.

Heavy imports stay inside the fixtures so test files that don't use them pay nothing.
"""
from __future__ import annotations

import pytest

TINY_NIGHTS = (("20211110", "mixed", 11), ("20211111", "cloudy", 12), ("20211112", "cloudy", 13))  # last: test
TINY_FRAMES = 30
TINY_SIZE = 64


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Three 30-frame simulated nights with raised event rates and their v4 dataset: (nights root, dataset)."""
    from gualta.dataset import prepare_dataset
    from gualta.simulate import Rates, simulate_night

    root = tmp_path_factory.mktemp("tiny")
    rates = Rates(meteor=0.3, fireball=0.02, satellite=0.1, plane=0.02, insect=0.03)
    nights = [simulate_night(root / "nights", date, frames=TINY_FRAMES, start="22:00", seed=seed, scenario=scenario,
                             rates=rates, workers=2, progress=False) for date, scenario, seed in TINY_NIGHTS]
    prepare_dataset(nights[:-1], nights[-1:], root / "data")
    return root / "nights", root / "data"


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset, tmp_path_factory):
    """ResNet18 trained from scratch for 1 epoch at 64 px, exported and evaluated on the test night."""
    from gualta.train import TrainConfig, run

    config = TrainConfig(dataset=tiny_dataset[1], out=tmp_path_factory.mktemp("run"), arch="resnet18",
                         size=TINY_SIZE, epochs=1, bs=8, threads=1, pretrained=False)
    return run(config)


# --- inference client (tests/test_detect.py, test_report.py, test_realtime.py, test_satellite_check.py) ----------

CLIENT_NIGHT = "20211110"
CLIENT_FRAMES = 24


@pytest.fixture(scope="session")
def client_night(tmp_path_factory):
    """A 24-frame clear simulated night with frequent meteors, satellites and planes (read-only: copy to change)."""
    from gualta.simulate import Rates, simulate_night

    rates = Rates(meteor=0.3, fireball=0.0, satellite=0.15, plane=0.04, insect=0.0)
    return simulate_night(tmp_path_factory.mktemp("client") / "nights", CLIENT_NIGHT, frames=CLIENT_FRAMES,
                          start="22:00", seed=31, scenario="clear", rates=rates, workers=2, progress=False)


@pytest.fixture
def madrid_clock(monkeypatch):
    """This machine's (the camera's) time zone: Europe/Madrid, whose summer time ended on 2021-10-31 at 03:00 and
    started again on 2022-03-27 at 02:00."""
    import time

    monkeypatch.setenv("TZ", "Europe/Madrid")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny ONNX model file the client loads like a trained one (see tests/helpers_client.py)."""
    from helpers_client import tiny_onnx_model

    return tiny_onnx_model(tmp_path_factory.mktemp("tiny-model") / "tiny.onnx")
