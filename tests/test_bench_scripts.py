"""Benchmark scripts that print figures run end to end, small: their own checks hold and they print what they claim."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from helpers_service import child_env

ROOT = Path(__file__).resolve().parent.parent


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
