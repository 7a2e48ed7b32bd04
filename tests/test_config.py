"""Client settings: guAltaConfig.py, GUALTA_* environment, CLI flags, --config FILE, one clear error at start-up."""
from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gualta import config, passes, service_env
from gualta.config import EXAMPLE_FILE, SETTINGS, ConfigError, load_settings, window_problem

REPO = Path(__file__).resolve().parent.parent


def test_defaults_come_from_the_repository_settings_file(monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_FILE", REPO / "no-guAltaConfig.py")       # none made here yet
    settings = load_settings(env={})
    assert settings.source == str(EXAMPLE_FILE)
    assert (settings.threshold, settings.start_time, settings.end_time) == (0.85, "2000", "0800")
    assert settings.sleep_between_imgs == 10 and settings.enable_telegram is True
    assert settings.model == REPO / "models" / "guAlta.onnx"               # relative to the settings file
    assert settings.satellite_check is True and settings.cloud_check is True and settings.report_flagged is False


def test_the_operators_copy_of_the_example_is_read_and_left_alone_by_git(tmp_path, monkeypatch):
    """guAltaConfig.py was tracked and edited in place, as the thesis has it: `git pull` then refused to upgrade
    ("Your local changes ... would be overwritten"). The repository ships guAltaConfig.example.py; the operator's
    copy, guAltaConfig.py, is read when it exists and git ignores it."""
    mine = tmp_path / "guAltaConfig.py"
    monkeypatch.setattr(config, "DEFAULT_FILE", mine)
    assert load_settings(env={}).source == str(EXAMPLE_FILE)
    mine.write_text(EXAMPLE_FILE.read_text().replace('guAlta_obs_id = "obs01"', 'guAlta_obs_id = "roof-02"'))
    settings = load_settings(env={})
    assert settings.source == str(mine) and settings.obs_id == "roof-02"
    assert config.load_service_settings(env={}).source == str(mine)
    if (REPO / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "guAltaConfig.py"], cwd=REPO, capture_output=True, text=True)
        assert ignored.stdout.strip() == "guAltaConfig.py"
        tracked = subprocess.run(["git", "ls-files", "guAltaConfig.py", "guAltaConfig.example.py"], cwd=REPO,
                                 capture_output=True, text=True)
        assert tracked.stdout.split() == ["guAltaConfig.example.py"]


def test_a_settings_file_elsewhere_still_finds_the_shipped_model(tmp_path):
    """With `--config /etc/gualta/settings.py` not setting guAlta_model, the shipped model was looked for in
    /etc/gualta/models/ ("missing and could not be downloaded"). The shipped model's default is where the repository
    has it; other defaults and the file's own values stay relative to the file."""
    elsewhere = settings_file(tmp_path / "etc" / "settings.py", 'guAlta_threshold = 0.9\n')
    settings = load_settings(elsewhere, env={})
    assert settings.model == REPO / "models" / "guAlta.onnx"                 # the shipped model
    assert settings.outbox == tmp_path / "etc" / "gualta_outbox.sqlite"       # where it always was


def test_a_copy_of_the_example_elsewhere_finds_the_shipped_model(tmp_path):
    """A copy of guAltaConfig.example.py used with `--config` keeps its line `guAlta_model = "models/guAlta.onnx"`:
    it was read beside the copy, where no model is, and the batch stopped ("missing and could not be downloaded").
    That value names the shipped model unless a model is there beside the copy (one it downloaded before); another
    relative one stays relative to the file."""
    example = (REPO / "guAltaConfig.example.py").read_text()
    assert '\nguAlta_model = "models/guAlta.onnx"' in example
    copy = settings_file(tmp_path / "etc" / "mycfg.py", example)
    assert load_settings(copy, env={}).model == REPO / "models" / "guAlta.onnx"
    (tmp_path / "etc" / "models").mkdir()
    (tmp_path / "etc" / "models" / "guAlta.onnx").write_bytes(b"a model this copy downloaded")
    assert load_settings(copy, env={}).model == tmp_path / "etc" / "models" / "guAlta.onnx"
    own = settings_file(tmp_path / "etc" / "own.py", 'guAlta_model = "models/own.onnx"\n')
    assert load_settings(own, env={}).model == tmp_path / "etc" / "models" / "own.onnx"


def test_environment_overrides_the_file_and_flags_override_both(tmp_path, monkeypatch):
    env = {"GUALTA_THRESHOLD": "0.9", "GUALTA_ENABLE_TELEGRAM": "false", "GUALTA_URL": "https://api.example.org/",
           "GUALTA_API_KEY": "secret-key-1", "GUALTA_START_TIME": "21:30", "GUALTA_MODEL": "m/x.onnx",
           "GUALTA_STORE": "ignored: a service setting"}
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env=env)
    assert settings.threshold == 0.9 and settings.enable_telegram is False and settings.start_time == "2130"
    assert settings.url == "https://api.example.org" and settings.api_key == "secret-key-1"
    assert settings.model == tmp_path / "m" / "x.onnx"                      # env paths: relative to the cwd
    flags = load_settings(env=env, overrides={"threshold": "0.5", "enable_telegram": True, "obs_id": None})
    assert flags.threshold == 0.5 and flags.enable_telegram is True and flags.obs_id == "obs01"


def settings_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_another_settings_file(tmp_path):
    config = settings_file(tmp_path / "site" / "myConfig.py",
                           'guAlta_threshold = 0.7\nguAlta_obs_id = "roof-2"\nguAlta_model = "nets/m.onnx"\n'
                           'guAlta_satellite_check = False\nguAlta_sleep_between_imgs = 2\n')
    settings = load_settings(config, env={})
    assert (settings.threshold, settings.obs_id, settings.satellite_check) == (0.7, "roof-2", False)
    assert settings.model == config.parent / "nets" / "m.onnx"
    assert settings.end_time == "0800"                                      # keys not in the file: defaults


def test_every_invalid_value_is_listed_once(tmp_path):
    config = tmp_path / "bad.py"
    config.write_text('guAlta_threshold = 1.5\nguAlta_start_time = "25:00"\nguAlta_obs_id = "my obs!"\n'
                      'guAlta_URL = "ftp://example.org"\nguAlta_api_key = ["not", "text"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env={"GUALTA_THREADS": "-1", "GUALTA_ENABLE_TELEGRAM": "maybe"})
    problems = caught.value.problems
    assert len(problems) == 7, problems
    text = str(caught.value)
    for expected in ("guAlta_threshold", "1.5", "guAlta_start_time", "guAlta_obs_id", "guAlta_URL",
                     "guAlta_api_key", "GUALTA_THREADS", "GUALTA_ENABLE_TELEGRAM"):
        assert expected in text
    assert "'not'" not in text                                              # the API key's value is never shown


PRINTABLE = "must be 8 or more printable characters, no spaces (an invisible character copied with it?)"
LATIN_1 = ("has a character an HTTP header cannot carry (only Latin-1 ones: an invisible character or a symbol such "
           "as € copied with it?)")


@pytest.mark.parametrize("key, problem", [("secret-key-1\u200b", PRINTABLE), ("sec\nret-key-1", PRINTABLE),
                                          ("short", PRINTABLE), ("secret key 1", PRINTABLE),
                                          ("secret-€-key-1", LATIN_1)])
def test_an_api_key_no_request_can_carry_is_refused_at_start(key, problem):
    """A character beyond Latin-1 (a zero-width space copied with the key, a €) crashed the sender with a traceback
    (an HTTP header carries Latin-1 only); a control character made every report fail as a network error; a key the
    service never takes (under 8 characters, a space) failed every report."""
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"GUALTA_API_KEY": key})
    assert caught.value.problems == [f"environment GUALTA_API_KEY: {problem}"]


def test_an_api_key_a_header_carries_is_taken():
    assert load_settings(env={"GUALTA_API_KEY": "  secret-key-1\r"}).api_key == "secret-key-1"   # ends stripped
    assert load_settings(env={"GUALTA_API_KEY": "clé-secrète-1"}).api_key == "clé-secrète-1"    # Latin-1
    assert load_settings(env={"GUALTA_API_KEY": ""}).api_key == ""                              # no uploads


def test_window_times_as_numbers_are_read_as_hhmm_and_an_hour_alone_is_refused(tmp_path):
    config = tmp_path / "numbers.py"
    config.write_text("guAlta_start_time = 2130\nguAlta_end_time = 800\n")
    assert (load_settings(config, env={}).start_time, load_settings(config, env={}).end_time) == ("2130", "0800")
    config.write_text("guAlta_start_time = 0\nguAlta_end_time = 0\n")
    assert load_settings(config, env={}).start_time == "0000"                  # the window: all day
    config.write_text("guAlta_start_time = 20\nguAlta_end_time = 8\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env={})
    assert caught.value.problems == [
        'guAlta_start_time in numbers.py = 20: could be 20:00 or 00:20: write HHMM, e.g. 2000 or "20:00"',
        'guAlta_end_time in numbers.py = 8: could be 08:00 or 00:08: write HHMM, e.g. 2000 or "20:00"']


@pytest.mark.parametrize("value", ["2400", "24:00", 2400, "2430"])
def test_hour_24_is_no_time_of_day(value):
    """A window from 2400 would be a time no clock reads: refused as the setting's value, not taken for midnight."""
    with pytest.raises(ValueError, match="must be a local time HHMM or HH:MM"):
        config.hhmm(value)
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"GUALTA_START_TIME": str(value)})
    assert caught.value.problems == [
        f"environment GUALTA_START_TIME = {str(value)!r}: must be a local time HHMM or HH:MM, e.g. 2000"]


@pytest.mark.parametrize("value", [1, 24, 30, 59, 99])
def test_any_number_under_100_is_refused_as_a_time(value):
    """`guAlta_start_time = 30` could mean 00:30 or half past something: every number under 100 is refused with the
    rule, not only those that could be an hour."""
    with pytest.raises(ValueError, match=f"could be {value:02d}:00 or 00:{value:02d}: write HHMM"):
        config.hhmm(value)


def test_numbers_at_the_top_of_their_range_are_taken():
    """The upper bound of each numeric setting is part of its range (threshold 1: only certain detections)."""
    env = {"GUALTA_THRESHOLD": "1", "GUALTA_SLEEP_BETWEEN_IMGS": "3600", "GUALTA_THREADS": "256",
           "GUALTA_BATCH_SIZE": "1024", "GUALTA_NIGHT_SUN_ALTITUDE": "10", "GUALTA_LATITUDE": "90",
           "GUALTA_LONGITUDE": "180"}
    settings = load_settings(env=env)
    assert (settings.threshold, settings.sleep_between_imgs, settings.threads, settings.batch_size) == (
        1.0, 3600.0, 256, 1024)
    assert (settings.night_sun_altitude, settings.latitude, settings.longitude) == (10.0, 90.0, 180.0)


def test_a_fraction_where_a_whole_number_is_wanted_is_refused(tmp_path):
    """`guAlta_batch_size = 2.5` would run with batches of 2 without a word: a whole-number setting refuses it."""
    settings = settings_file(tmp_path / "fraction.py", "guAlta_batch_size = 2.5\nguAlta_threads = 4.0\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(settings, env={})
    assert caught.value.problems == ["guAlta_batch_size in fraction.py = 2.5: must be a whole number"]


def test_numbers_too_large_for_a_float_are_refused_in_words(tmp_path):
    """`guAlta_batch_size = 1e999` or `guAlta_threshold = 10**400` in the settings file ended in an OverflowError
    traceback (the same text from the environment was refused cleanly)."""
    settings = settings_file(tmp_path / "huge.py", "guAlta_batch_size = 1e999\nguAlta_threshold = 10**400\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(settings, env={})
    assert sorted(caught.value.problems) == ["guAlta_batch_size in huge.py = inf: must be from 1 to 1024",
                                             f"guAlta_threshold in huge.py = {10**400}: must be from 0 to 1"]
    for unbounded in (config.number(0), config.number(0, integer=True)):
        with pytest.raises(ValueError, match="is too large"):
            unbounded(10**400)
        with pytest.raises(ValueError, match="must be at least 0"):
            unbounded(float("-inf"))


@pytest.mark.parametrize("variable", ["GUALTA_URL", "GUALTA_MODEL_URL"])
@pytest.mark.parametrize("address", ["http://op:secret@myhost:808O", "http://myhost:99999", "http://myhost:0"])
def test_a_url_with_a_port_no_connection_can_use_is_refused_at_start(address, variable):
    """A guAlta_URL whose port is not 1–65535 was taken: with a user and password the watcher died at start in a
    traceback, without them every report failed all night as a network outage ("InvalidURL")."""
    with pytest.raises(ConfigError) as caught:
        load_settings(env={variable: address})
    assert "port (if any) from 1 to 65535" in caught.value.problems[0]
    assert "secret" not in caught.value.problems[0]
    assert config.without_credentials("http://op:secret@[::1]:808O/up") == "http://[::1]:808O/up"   # as written


@pytest.mark.parametrize("url, shown", [("http://op:p@ss@host:8765/x", "http://host:8765/x"),
                                        ("op:p@ss@host:8765", "host:8765")])
def test_a_password_with_an_at_sign_is_left_out_whole(url, shown):
    """A password holding '@' (the URL's last '@' ends it) would have shown its tail in a problem line or log."""
    assert config.without_credentials(url) == shown


def test_a_url_without_its_scheme_is_refused_without_its_password():
    """`op:secret@myhost:8765` (http:// left out) reads as the scheme 'op': its problem line showed the password."""
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"GUALTA_URL": "op:secret@myhost:8765"})
    assert caught.value.problems == [
        "environment GUALTA_URL = 'myhost:8765': must be an http:// or https:// URL, its port (if any) from 1 to 65535 "
        "(or empty)"]


@pytest.mark.parametrize("zone", ["Europe", "America/Argentina", "America/Indiana"])
def test_a_time_zone_name_that_is_a_folder_of_zones_is_refused_in_words(tmp_path, zone):
    """"America/Argentina" for "America/Argentina/Buenos_Aires" (a folder of the zone database, not a zone) ended the
    client, `serve` and `site` in an IsADirectoryError traceback, and failed every log upload on AWS."""
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"GUALTA_CAMERA_TIMEZONE": zone})
    assert "not a known time zone" in caught.value.problems[0]
    with pytest.raises(service_env.ServiceConfigError, match="unknown time zone in GUALTA_TIMEZONE"):
        service_env.timezone({"GUALTA_TIMEZONE": zone})
    with pytest.raises(service_env.ServiceConfigError, match="unknown time zone"):
        passes.observatories_from_env({"GUALTA_OBSERVATORIES": f'{{"obs01": {{"lat": 1, "lon": 1, "tz": "{zone}"}}}}'})


def test_a_boolean_setting_takes_0_and_1_and_no_other_number(tmp_path):
    """`guAlta_enable_telegram = 2` (a typo, or a count) would be taken for true: only 0 and 1 stand for booleans."""
    settings = settings_file(tmp_path / "flags.py", "guAlta_enable_telegram = 0\nguAlta_satellite_check = 1\n")
    loaded = load_settings(settings, env={})
    assert (loaded.enable_telegram, loaded.satellite_check) == (False, True)
    settings.write_text("guAlta_enable_telegram = 2\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(settings, env={})
    assert caught.value.problems == [
        "guAlta_enable_telegram in flags.py = 2: must be true or false (1/0, yes/no, on/off)"]


def test_a_window_running_past_noon_is_refused_by_the_watcher_alone(tmp_path):
    """A window 2000–1300: at 12:30 the watcher took the night begun at noon (daytime capture on), closed it at 13:00
    with its first frames and never watched it again that evening. A window that ends by noon, begins at noon or
    later, or is always open is taken; batch and flush, which need no window, take any."""
    from gualta.client_errors import ClientError
    from gualta.realtime import run_realtime

    config = tmp_path / "window.py"
    for start, end in (("2000", "1200"), ("1100", "0800"), ("1200", "1400"), ("1300", "2300"), ("1300", "1300")):
        assert window_problem(start, end) == "", (start, end)
    for start, end in (("2000", "1300"), ("1000", "1400")):
        config.write_text(f"guAlta_start_time = {start!r}\nguAlta_end_time = {end!r}\n")
        settings = load_settings(config, env={})
        assert (settings.start_time, settings.end_time) == (start, end)
        with pytest.raises(ClientError) as caught:
            run_realtime(settings, upload=False)
        assert str(caught.value) == (
            f"guAlta_start_time {start} to guAlta_end_time {end}: the real-time window may not run past noon, when "
            f"AllSky's night folder changes (with daytime capture on, the night begun at noon would be closed at {end} "
            f"and never watched): end it by 1200")


def test_unreadable_or_missing_settings_file(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("guAlta_threshold = (\n")
    with pytest.raises(ConfigError, match="cannot read settings file"):
        load_settings(broken, env={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.py", env={})


def test_an_api_key_written_without_its_quotes_is_never_printed(tmp_path):
    """`guAlta_api_key = Xq9fSecretKey42` stopped the client with "NameError: name 'Xq9fSecretKey42' is not defined":
    the key in the journal every 30 s, or in a world-readable batch.log."""
    unquoted = tmp_path / "guAltaConfig.py"
    unquoted.write_text('guAlta_obs_id = "obs01"\nguAlta_api_key = Xq9fSecretKey42\n')
    with pytest.raises(ConfigError) as error:
        load_settings(unquoted, env={})
    assert "line 2: a value that is not Python (text without its quotes?)" in str(error.value)
    assert "Xq9f" not in str(error.value)


def test_a_url_s_user_and_password_are_never_shown():
    """guAlta_URL may carry a reverse proxy's basic authentication: the settings line logged at every start showed
    it whole."""
    shown = load_settings(env={}, overrides={"url": "https://obs01:ProxyPassw0rd@meteors.example.org:8443/gualta",
                                             "api_key": "a-key-of-32-characters-0123456789"}).describe()
    assert "ProxyPassw0rd" not in shown and "url=https://meteors.example.org:8443/gualta" in shown
    assert "a-key-of-32" not in shown and "api_key=set" in shown


def test_unknown_keys_are_warned_with_a_suggestion(tmp_path, caplog):
    config = tmp_path / "typo.py"
    config.write_text("guAlta_treshold = 0.5\n")
    with caplog.at_level(logging.WARNING, "gualta.config"):
        settings = load_settings(config, env={})
    assert settings.threshold == 0.85
    assert "guAlta_treshold" in caplog.text and "did you mean guAlta_threshold" in caplog.text


def test_a_key_in_another_case_is_taken_and_one_key_twice_is_refused(tmp_path, caplog):
    """`guAlta_url` (every other key is lower case) was ignored, and the warning suggested guAlta_model_url."""
    config = tmp_path / "case.py"
    config.write_text('guAlta_url = "https://api.example.org/Prod"\nGUALTA_THRESHOLD = 0.7\nguAlta_Urll = 1\n')
    with caplog.at_level(logging.WARNING, "gualta.config"):
        settings = load_settings(config, env={})
    assert settings.url == "https://api.example.org/Prod" and settings.threshold == 0.7
    assert [record.getMessage() for record in caplog.records] == [
        f"{config}: unknown setting guAlta_Urll ignored (did you mean guAlta_URL?)"]
    config.write_text('guAlta_URL = "https://a.example.org"\nguAlta_url = "https://b.example.org"\n')
    with pytest.raises(ConfigError, match="guAlta_URL is set twice"):
        load_settings(config, env={})


def test_an_empty_environment_variable_is_ignored_with_a_warning(tmp_path, caplog):
    """A placeholder `GUALTA_API_KEY=` in an environment file hid the key set in the settings file."""
    config = settings_file(tmp_path / "keyed.py", 'guAlta_api_key = "file-key-1"\nguAlta_threshold = 0.9\n')
    with caplog.at_level(logging.WARNING, "gualta.config"):
        settings = load_settings(config, env={"GUALTA_API_KEY": "", "GUALTA_THRESHOLD": ""})
    assert settings.api_key == "file-key-1" and settings.threshold == 0.9
    assert "environment GUALTA_API_KEY is empty: ignored" in caplog.text
    assert "file-key-1" not in caplog.text


def test_misspelt_environment_variables_are_warned_with_a_suggestion(caplog):
    env = {"GUALTA_TRESHOLD": "0.5", "GUALTA_OBSID": "obs07", "GUALTA_API_KEYS": "obs01:service-side-keys",
           "GUALTA_STORE": "s3://bucket", "GUALTA_NB_EPOCHS": "3", "GUALTA_SOMETHING_ELSE": "1"}
    with caplog.at_level(logging.WARNING, "gualta.config"):
        settings = load_settings(env=env)
    assert settings.threshold == 0.85 and settings.obs_id != "obs07"
    assert [record.getMessage() for record in caplog.records] == [
        "environment GUALTA_OBSID ignored: not a setting (did you mean GUALTA_OBS_ID?)",
        "environment GUALTA_TRESHOLD ignored: not a setting (did you mean GUALTA_THRESHOLD?)"]


def test_every_variable_the_package_reads_is_known_to_the_misspelling_check(caplog):
    """A variable the code reads but the check does not know would be ignored silently when misspelt."""
    package = Path(config.__file__).parent
    read = {name for source in [*package.rglob("*.py"), *(package.parent / "aws_lambda").rglob("*.py")]
            for name in re.findall(r"[\"'](GUALTA_[A-Z0-9_]+)[\"']", source.read_text())}
    assert "GUALTA_TELEGRAM_WITHIN_DAYS" in read
    assert read - {setting.env for setting in SETTINGS} - config.OTHER_ENV == set()
    with caplog.at_level(logging.WARNING, "gualta.config"):
        config.warn_misspelt_env({"GUALTA_TELEGRAM_WITHIN_DAY": "3"})
    assert "did you mean GUALTA_TELEGRAM_WITHIN_DAYS?" in caplog.text


def test_every_setting_has_a_key_an_environment_variable_and_a_flag():
    keys = {setting.key for setting in SETTINGS}
    for thesis_key in ("guAlta_main_folder", "guAlta_start_time", "guAlta_end_time", "guAlta_obs_id", "guAlta_URL",
                       "guAlta_enable_telegram", "guAlta_enable_extra_log", "guAlta_threshold",
                       "guAlta_sleep_between_imgs", "guAlta_api_key", "guAlta_model", "guAlta_outbox",
                       "guAlta_satellite_check", "guAlta_report_flagged", "guAlta_threads"):
        assert thesis_key in keys
    threshold = next(s for s in SETTINGS if s.name == "threshold")
    assert (threshold.env, threshold.flag) == ("GUALTA_THRESHOLD", "--threshold")
    assert next(s for s in SETTINGS if s.name == "url").env == "GUALTA_URL"


def test_cli_stops_with_exit_2_and_lists_the_problems(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "guAlta.py"), "batch", "--threshold", "2",
                             "--start-time", "9999", "--no-upload", "--folder", str(tmp_path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "GUALTA_OBS_ID": "bad id"})
    assert result.returncode == 2
    assert "invalid settings" in result.stderr
    for expected in ("--threshold", "--start-time", "GUALTA_OBS_ID"):
        assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_service_settings_from_the_file_then_environment(tmp_path):
    from gualta.config import load_service_settings

    config = settings_file(tmp_path / "conf" / "serviceConfig.py",
                           'guAlta_store = "nights_store"\nguAlta_site_time = "07:30"\n'
                           'guAlta_observatories = {"obs01": {"lat": 41.6, "lon": 1.8, "elevation_m": 300}}\n')
    settings = load_service_settings(config, env={})
    assert settings.store == str(config.parent / "nights_store")              # relative to the settings file
    assert settings.site_time == "0730" and settings.observatories["obs01"]["lat"] == 41.6
    from_env = load_service_settings(config, env={"GUALTA_STORE": "s3://bucket/x", "GUALTA_SITE_TIME": "off"})
    assert from_env.store == "s3://bucket/x" and from_env.site_time == "off"

    config.write_text('guAlta_store = " "\n')                    # it was the settings file's own folder
    with pytest.raises(ConfigError, match="guAlta_store is empty"):
        load_service_settings(config, env={})
    config.write_text("guAlta_site_time = 930\n")
    assert load_service_settings(config, env={}).site_time == "0930"          # a number, as the window's times
    config.write_text('guAlta_site_time = "25:00"\nguAlta_observatories = ["obs01"]\n')
    with pytest.raises(ConfigError) as error:
        load_service_settings(config, env={})
    assert "guAlta_site_time" in str(error.value) and "guAlta_observatories" in str(error.value)
    config.write_text('guAlta_site_time = "25:00"\nguAlta_observatories = {"obs01": {"lat": 141.6, "lon": 1.8}, '
                      '"obs02": {"lon": 2.0}, "obs03": {"lat": 41, "lon": 2, "tz": "Europe/Madird"}, '
                      '"obs04": {"lat": 41, "lon": 2, "night_sun_altitude": 30}}\n')
    with pytest.raises(ConfigError) as error:     # named after an unset variable, alone, once the store was made
        load_service_settings(config, env={})
    assert [line.strip() for line in str(error.value).splitlines()[-4:]] == [
        "- guAlta_observatories in serviceConfig.py: obs01: latitude/longitude out of range",
        "- guAlta_observatories in serviceConfig.py: obs02: lat is missing",
        "- guAlta_observatories in serviceConfig.py: obs03: unknown time zone 'Europe/Madird'",
        "- guAlta_observatories in serviceConfig.py: obs04: night_sun_altitude 30 is outside -18…10 degrees"]
    assert "guAlta_site_time" in str(error.value)
    overridden = {"GUALTA_OBSERVATORIES": "{}", "GUALTA_SITE_TIME": "0900"}    # the file's places are not used
    assert load_service_settings(config, env=overridden).site_time == "0900"


def test_service_settings_warn_of_unknown_keys_and_misspelt_variables(tmp_path, caplog):
    """`serve` and `site` read the file and environment without a word about typos: a Telegram channel given as
    GUALTA_TELEGRAM_CHANNEL silently posted nothing."""
    from gualta.config import load_service_settings

    config = settings_file(tmp_path / "svc.py", 'guAlta_site_tme = "0700"\nguAlta_Store = "kept_here"\n')
    with caplog.at_level(logging.WARNING, "gualta.config"):
        settings = load_service_settings(config, env={"GUALTA_TELEGRAM_CHANNEL": "@night"})
    assert settings.store == str(tmp_path / "kept_here") and settings.site_time == "0900"
    assert [record.getMessage() for record in caplog.records] == [
        f"{config}: unknown setting guAlta_site_tme ignored (did you mean guAlta_site_time?)",
        "environment GUALTA_TELEGRAM_CHANNEL ignored: not a setting (did you mean GUALTA_TELEGRAM_CHAT?)"]


def test_help_names_every_settings_key_and_default():
    """--help gave the switches of the boolean settings without their guAltaConfig key or variable, and no defaults
    (`serve --port`, `demo --frames`, the settings' own): the README was the only place to find them."""
    batch = subprocess.run([sys.executable, str(REPO / "guAlta.py"), "batch", "--help"], capture_output=True,
                           text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "COLUMNS": "400"})
    text = " ".join(batch.stdout.split())
    for setting in SETTINGS:
        assert f"({setting.key}, {setting.env}; built-in default {setting.default!r})" in text
    serve = subprocess.run([sys.executable, str(REPO / "guAlta.py"), "serve", "--help"], capture_output=True,
                           text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "COLUMNS": "400"})
    assert "(default: 8765)" in serve.stdout and "(default: 127.0.0.1)" in serve.stdout


def test_the_cameras_place_is_both_coordinates_or_none(tmp_path):
    assert (load_settings(env={}).latitude, load_settings(env={}).longitude) == (None, None)
    placed = load_settings(env={"GUALTA_LATITUDE": "41.6", "GUALTA_LONGITUDE": "-1.84"})
    assert (placed.latitude, placed.longitude, placed.night_sun_altitude) == (41.6, -1.84, -6.0)
    for env, said in (({"GUALTA_LATITUDE": "41.6"}, "guAlta_latitude and guAlta_longitude go together"),
                      ({"GUALTA_LATITUDE": "141.6", "GUALTA_LONGITUDE": "1"}, "must be from -90 to 90"),
                      ({"GUALTA_LATITUDE": "41.6", "GUALTA_LONGITUDE": "1", "GUALTA_NIGHT_SUN_ALTITUDE": "-30"},
                       "must be from -18 to 10")):
        with pytest.raises(ConfigError, match=said):
            load_settings(env=env)
