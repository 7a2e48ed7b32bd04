"""Benchmark scripts that print figures run end to end, small: their own checks hold and they print what they claim."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_nights import make_night
from helpers_service import child_env

from gualta import allsky

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def run_bench(*args: str) -> str:
    run = subprocess.run([sys.executable, *args], cwd=ROOT, env=child_env(), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def test_page_build_bench_on_moto():
    """The scheduled page on moto's S3 server: 2 observatories × 20 detections, each record read once (with the
    logs and the earlier pages' inputs, fewer reads than twice the records)."""
    output = run_bench("bench/page_build.py", "--observatories", "2", "--detections", "20", "--latency-ms", "0",
                       "--repeats", "1")
    assert "2 observatories × 20 detections (40)" in output
    assert 40 <= int(re.search(r"GetObject (\d+)", output).group(1)) < 2 * 40


def test_client_memory_bench_by_batch_size(client_night):
    output = run_bench("bench/client_memory.py", "--night", str(client_night), "--batch-sizes", "4,1",
                       "--repeats", "1", "--threads", "1", "--arena", "release,keep")
    assert re.search(r"batch size   4  arena release  peak memory +\d+ MB", output)
    assert re.search(r"batch size   1  arena keep     peak memory +\d+ MB \( *[-+]\d+\)  then one at a time +\d+ MB",
                     output)
    assert re.search(r"batch size   1: speed with the arena released / kept, median of the rounds' ratios \d", output)
    assert "decisions (file, detection, flag) the same in every run: True" in output


def test_realtime_latency_bench(client_night):
    """Frames written as a camera does to a watcher sending to a local service: each sent detection's latency."""
    output = run_bench("bench/realtime_latency.py", "--night", str(client_night), "--frames", "12", "--every", "0.5",
                       "--sleep", "0.1", "--threads", "1")
    sent = int(re.search(r"(\d+) detections sent", output).group(1))
    assert 1 <= sent <= 12
    median, worst = map(float, re.search(r"frame complete → sent +median +([\d.]+) s +max +([\d.]+) s",
                                         output).groups())
    assert 0 < median <= worst


def test_camera_shake_nights_and_scores_kept_by_their_settings(tmp_path):
    """A rerun with other frames (or seed) simulates its own nights, and scores are kept by the client's commit
    (and uncommitted changes) and the night folder, not by the client's place on the command line."""
    from camera_shake import checkout_key, scores_path, undisturbed_nights

    two, three = (undisturbed_nights(tmp_path, ["clear"], frames, seed=1)[0] for frames in (2, 3))
    assert [len(allsky.list_frames(night)) for night in (two, three)] == [2, 3]
    assert scores_path(tmp_path, "c", two) != scores_path(tmp_path, "c", three)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t"]
    (checkout / "a.py").write_text("x = 1\n")
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "a.py"], check=True)
    subprocess.run(git + ["commit", "-qm", "a"], check=True)
    committed = checkout_key(checkout)
    (checkout / "a.py").write_text("x = 2\n")
    assert checkout_key(checkout) not in (committed, checkout.name)
    subprocess.run(git + ["commit", "-qam", "b"], check=True)
    assert checkout_key(checkout) != committed


def test_lightning_copy_kept_lists_the_frames_it_painted(tmp_path):
    """A copy made with other settings lists the frames painted in it (its painted.json), not the new settings'."""
    from lightning import painted_copy

    night = make_night(tmp_path / "nights", frames=20)
    first = painted_copy(night, tmp_path / "out", flashes=4, bolts=1, seed=1)
    assert len(first) >= 2 and painted_copy(night, tmp_path / "out", flashes=2, bolts=0, seed=5) == first
    assert json.loads((tmp_path / "out" / night.name / "painted.json").read_text()) == first


def test_painted_night_copy_kept_by_seed(tmp_path):
    """aurora, web_strand and satellite_train: a copy painted with another seed is painted anew, beside the first."""
    from web_strand import painted_night

    night = make_night(tmp_path / "nights", frames=3)
    seeds = []
    copies = [painted_night(night, tmp_path / "painted", seed, lambda rng, frames, copy: seeds.append(seed))
              for seed in (1, 2, 1)]
    assert seeds == [1, 2] and copies[0] == copies[2] != copies[1]


@pytest.mark.parametrize("script, argv, message", [
    ("client", ["--frames", "1"], "at least 2"),
    ("client", ["--repeats", "0"], "at least 1"),
    ("model_storage", ["--night", "/nonexistent"], "at least two frames"),
    ("client_memory", ["--batch-sizes", "x"], "comma-separated"),
    ("client_memory", ["--batch-sizes", "4,0"], "at least 1"),
    ("client_memory", ["--night", "/nonexistent"], "at least two frames"),
    ("load", ["--resend", "3"], "from 0 to 1"),
    ("load", ["--resend", "-1"], "from 0 to 1"),
])
def test_bad_arguments_are_usage_errors(script, argv, message, capsys):
    """Bad options end with a usage error naming what is wrong, not a traceback halfway through a run."""
    with pytest.raises(SystemExit) as stop:
        __import__(script).main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_failed_bench_process_shows_its_error():
    """A child process that fails (client_memory's runs, the peak memory) ends the bench with its own error lines."""
    from client import child_output

    with pytest.raises(SystemExit) as stop:
        child_output("import sys; sys.exit('the night could not be read')")
    assert "the night could not be read" in str(stop.value.code)


def test_single_timings_say_so():
    """The simulator's night timings are one run each unless --repeats asks for more, and the output says which."""
    output = run_bench("bench/simulator.py", "--frames", "2", "--nights-per-scenario", "1")
    assert "one run each: a single timing, not a median" in output


def test_client_bench_timings_leave_out_a_warm_up_run():
    """bench/client.py's medians leave out the first run of each measurement (caches, first-run set-up)."""
    from client import after_warm_up

    runs = iter([100.0, 1.0, 2.0, 3.0])
    assert after_warm_up(lambda: next(runs), repeats=3) == 2.0
