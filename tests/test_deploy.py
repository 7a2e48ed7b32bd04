"""The deployment recipes in deploy/ as an operator installs them: the cron line and the unit's command run as
written."""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from xml.etree import ElementTree

from gualta import allsky
from gualta.detect import run_batch
from gualta.report import Outbox
from gualta.scores import read_scores
from gualta.server import ChildServer
from helpers_client import as_ordinary_user, copy_night, settings
from helpers_service import KEYS, REPO, child_env, service_env

CRON = REPO / "deploy" / "guAlta-batch.cron"
TASK = "http://schemas.microsoft.com/windows/2004/02/mit/task"     # Task Scheduler's XML namespace
UNIT = REPO / "deploy" / "guAlta-realtime.service"
HOME, ENV_FILE = "/home/pi/guAlta", "/etc/gualta.env"


def cron_line() -> tuple[str, str]:
    """(schedule, command) of the crontab entry, as cron reads it (`\\%` is a literal %)."""
    [line] = [line for line in CRON.read_text().splitlines() if line.strip() and not line.startswith("#")]
    fields = line.split(maxsplit=5)
    return " ".join(fields[:5]), fields[5].replace("\\%", "%")


def test_the_cron_line_scores_last_night_with_the_units_environment_file(client_night, tiny_model, tmp_path):
    """The morning batch, run by /bin/sh as the unprivileged user with the key file the systemd unit reads: last
    night scored into scores/YYYYMMDD.csv, its detections delivered, the summary in the log; a night missed earlier
    in the week scored too."""
    schedule, command = cron_line()
    assert schedule == "30 8 * * *"
    assert f"EnvironmentFile=-{ENV_FILE}" in UNIT.read_text() and f"WorkingDirectory={HOME}" in UNIT.read_text()
    install = [line for line in UNIT.read_text().splitlines() if ENV_FILE in line and "install" in line]
    assert install and "-o pi" in install[0]            # the cron user must be able to read the key file
    home = tmp_path / "guAlta"
    home.mkdir()
    for name in (".venv", "guAlta.py"):
        (home / name).symlink_to(REPO / name)
    copy_night(client_night, tmp_path / "images")
    shutil.copytree(client_night, tmp_path / "images" / "20211108")          # a night the morning run missed
    store = tmp_path / "store"
    with ChildServer(store, child_env(**service_env(store))) as child:
        env_file = tmp_path / "gualta.env"
        env_file.write_text(f"GUALTA_API_KEY={KEYS['obs01']}\nGUALTA_OBS_ID=obs01\nGUALTA_URL={child.url}\n"
                            f"GUALTA_MAIN_FOLDER={tmp_path / 'images'}\nGUALTA_MODEL={tiny_model}\n"
                            f"GUALTA_OUTBOX={tmp_path / 'outbox.sqlite'}\nGUALTA_THREADS=1\n")
        env_file.chmod(0o600)
        run = subprocess.run(["/bin/sh", "-c", command.replace(HOME, str(home)).replace(ENV_FILE, str(env_file))],
                             capture_output=True, text=True, timeout=180,
                             env={key: value for key, value in child_env().items() if not key.startswith("GUALTA_")})
    assert run.returncode == 0, run.stderr
    scores = home / "scores" / "20211110.csv"                                # named after the night scored
    rows = read_scores(scores)
    assert len(rows) == 24
    assert "night 20211110: 24 frames" in (home / "scores" / "batch.log").read_text()
    assert len(read_scores(home / "scores" / "20211108.csv")) == 24                # caught up
    reported = {f"obs01_{allsky.frame_id(row['file'])}.json" for row in rows if row["detection"] == "1"}
    assert reported and {path.name for path in (store / "detections" / "20211110").iterdir()} == reported


def test_the_cron_line_runs_without_the_environment_file(client_night, tiny_model, tmp_path):
    """Without /etc/gualta.env (no systemd unit beside it) the settings come from the crontab's variables, as its
    comment says: the line must not stop at the missing file."""
    _, command = cron_line()
    home = tmp_path / "guAlta"
    home.mkdir()
    for name in (".venv", "guAlta.py"):
        (home / name).symlink_to(REPO / name)
    copy_night(client_night, tmp_path / "images")
    crontab_env = {"GUALTA_API_KEY": KEYS["obs01"], "GUALTA_OBS_ID": "obs01", "GUALTA_URL": "http://127.0.0.1:9",
                   "GUALTA_MAIN_FOLDER": str(tmp_path / "images"), "GUALTA_MODEL": str(tiny_model),
                   "GUALTA_OUTBOX": str(tmp_path / "outbox.sqlite"), "GUALTA_THREADS": "1"}
    run = subprocess.run(["/bin/sh", "-c", command.replace(HOME, str(home)).replace(ENV_FILE, str(tmp_path / "none"))],
                         capture_output=True, text=True, timeout=180, env={**child_env(), **crontab_env})
    assert run.returncode == 0, run.stderr
    assert len(read_scores(home / "scores" / "20211110.csv")) == 24
    assert "report(s) pending in the outbox" in (home / "scores" / "batch.log").read_text()   # the service is down


def test_the_cron_line_logs_an_environment_file_it_cannot_read(tmp_path):
    """The log redirection covered the client only: an /etc/gualta.env the cron user cannot read stopped the shell
    before it, and scores/batch.log said nothing, morning after morning."""
    _, command = cron_line()
    home = tmp_path / "guAlta"
    home.mkdir()
    env_file = tmp_path / "gualta.env"
    env_file.write_text("GUALTA_API_KEY=never-read-123\n")
    env_file.chmod(0)
    run = subprocess.run(as_ordinary_user(["/bin/sh", "-c", command.replace(HOME, str(home))
                                           .replace(ENV_FILE, str(env_file))]),
                         capture_output=True, text=True, timeout=60, env=child_env())
    log = (home / "scores" / "batch.log").read_text()
    assert run.returncode != 0 and str(env_file) in log and "never-read" not in log


def test_the_windows_recipes_call_the_client_as_it_reads_its_options():
    """The .bat files (cmd.exe wants CRLF lines) run guAlta.py with options its parser accepts, and the scheduled
    task starts the real-time one, with retries Task Scheduler's schema takes (Count 1–255, Interval ≥ 1 min)."""
    import importlib.util
    import shlex

    spec = importlib.util.spec_from_file_location("guAlta_cli", REPO / "guAlta.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)

    calls = []
    for bat in sorted((REPO / "deploy").glob("*.bat")):
        data = bat.read_bytes()
        assert data.count(b"\r\n") == data.count(b"\n") > 0, f"{bat.name} must have CRLF line ends"
        for line in data.decode().splitlines():
            if "guAlta.py" in line:
                words = shlex.split(line.split("guAlta.py", 1)[1].replace("%*", "").replace("\\", "/"))
                cli.build_parser().parse_args(words)                   # an unknown option would exit 2
                calls.append((bat.name, words[0]))
    assert sorted(set(calls)) == [("guAlta_batch.bat", "batch"), ("guAlta_realtime.bat", "realtime")]
    restarts = (REPO / "deploy" / "guAlta_realtime.bat").read_text()
    assert restarts.index('if "%CODE%"=="2" (') < restarts.index("goto run")     # invalid settings: not every minute
    task = (REPO / "deploy" / "guAlta_realtime_task.xml").read_text()
    assert "guAlta_realtime.bat</Command>" in task
    restart = ElementTree.fromstring(task.encode()).find(f"{{{TASK}}}Settings/{{{TASK}}}RestartOnFailure")
    assert 1 <= int(restart.find(f"{{{TASK}}}Count").text) <= 255          # the schema's range: 999 was refused
    assert 1 <= int(re.fullmatch(r"PT(\d+)M", restart.find(f"{{{TASK}}}Interval").text)[1]) <= 44640   # PT1M–P31D


def test_the_units_command_watches_and_writes_each_ended_nights_scores(client_night, tiny_model, tmp_path):
    """The systemd unit's ExecStart, run in its WorkingDirectory with its settings in the environment (as its
    EnvironmentFile gives them): the night the watcher closes (here when the next night's folder appears) is written
    to scores/YYYYMMDD.csv as a batch run writes it; SIGTERM stops it cleanly."""
    [command] = [line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith("ExecStart=")]
    [after] = [line for line in UNIT.read_text().splitlines() if line.startswith("After=")]
    assert "time-sync.target" in after.split("=", 1)[1].split()     # a Pi without a real-time clock: after NTP
    home = tmp_path / "guAlta"
    home.mkdir()
    for name in (".venv", "guAlta.py"):
        (home / name).symlink_to(REPO / name)
    root = tmp_path / "images"
    copy_night(client_night, root)
    env = {key: value for key, value in child_env().items() if not key.startswith("GUALTA_")}
    env.update(GUALTA_MAIN_FOLDER=str(root), GUALTA_MODEL=str(tiny_model), GUALTA_OUTBOX=str(tmp_path / "o.sqlite"),
               GUALTA_THREADS="1", GUALTA_START_TIME="0000", GUALTA_END_TIME="0000", GUALTA_SLEEP_BETWEEN_IMGS="0.1")
    process = subprocess.Popen([*command.replace(HOME, str(home)).split(), "--no-upload"], cwd=home, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    scores = home / "scores" / "20211110.csv"
    try:
        deadline = time.monotonic() + 90
        while not decided(tmp_path / "o.sqlite") and time.monotonic() < deadline:
            time.sleep(0.2)                                           # the night is being watched
        (root / "20211111").mkdir()
        shutil.copy(allsky.list_frames(client_night)[0], root / "20211111" / "image-20211111200000.jpg")
        while not scores.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, output
    batch = tmp_path / "batch.csv"
    summary = run_batch(settings(tmp_path / "b", tiny_model), root / "20211110", batch, upload=False,
                        say=lambda line: None, progress=False)
    assert f"night 20211110 ended: {summary.counts()}; scores {Path('scores') / '20211110.csv'}" in output
    assert [row["file"] for row in read_scores(scores)] == [row["file"] for row in read_scores(batch)]
    assert [row["detection"] for row in read_scores(scores)] == [row["detection"] for row in read_scores(batch)]


def decided(outbox: Path, night: str = "20211110") -> int:
    """How many of the night's frames the watcher has decided (0 before its outbox exists)."""
    if not outbox.exists():
        return 0
    with Outbox(outbox) as box:
        return len(box.night_rows(night))


def unit_sections() -> dict[str, dict[str, str]]:
    """The unit's settings by section, as systemd reads them (comments left out)."""
    sections: dict[str, dict[str, str]] = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            section[key] = value
    return sections


def seconds(value: str) -> int:
    """A systemd time span such as `30`, `30s`, `15min` or `1h`, in seconds."""
    number, unit = re.fullmatch(r"(\d+)\s*(s|min|h)?", value).groups()
    return int(number) * {None: 1, "s": 1, "min": 60, "h": 3600}[unit]


def test_the_unit_does_not_restart_every_30_s_for_ever_on_a_fatal_error():
    """A full disk or invalid settings stopped the watcher at every start, and systemd started it again every 30 s all
    night (~700 journal lines an hour). Invalid settings (exit status 2) are not restarted; other failures are, until a
    burst of starts within the interval (older systemd) or with a growing delay (systemd 254+)."""
    unit, service = unit_sections()["Unit"], unit_sections()["Service"]
    assert service["Restart"] == "on-failure" and "2" in service["RestartPreventExitStatus"].split()
    burst, interval = int(unit["StartLimitBurst"]), seconds(unit["StartLimitIntervalSec"])
    assert 1 < burst and burst * seconds(service["RestartSec"]) < interval          # a failing loop hits the limit
    assert seconds(service["RestartMaxDelaySec"]) > seconds(service["RestartSec"]) and int(service["RestartSteps"]) > 0
