"""guAlta operator settings — the thesis' keys. Copy this file to guAltaConfig.py and edit the copy for your
observatory: git ignores it, so upgrades (`git pull`) keep it. Without a guAltaConfig.py this file is read.

Every key can be overridden by an environment variable GUALTA_<KEY> (e.g. GUALTA_THRESHOLD=0.9) and the client's
keys by a CLI flag (e.g. --threshold 0.9; the service's: `serve --store`, `serve --site-at`); `--config FILE` reads
another file like this one. Relative paths here are relative to this
file's folder.
"""

guAlta_main_folder = "/home/pi/allsky/images"   # AllSky images root: one YYYYMMDD folder per night
guAlta_start_time = "2000"                      # real-time window start (HHMM, local time)
guAlta_end_time = "0800"                        # real-time window end (may be after midnight)
guAlta_obs_id = "obs01"                         # this observatory's id (letters, digits, - and _)
guAlta_URL = "http://127.0.0.1:8765"            # central service (embedded server or API Gateway stage URL)
guAlta_enable_telegram = True                   # ask the service to post detections to Telegram
guAlta_enable_extra_log = False                 # per-frame lines: path , label , p_meteor , p_no_meteor
guAlta_threshold = 0.85                         # meteor score at or above which a frame is a candidate
                                                # (reported unless a check holds it back)
guAlta_sleep_between_imgs = 10                  # real time: sleep after handling frames, then check every 0.5 s
guAlta_api_key = ""                             # this observatory's key for guAlta_URL (better: env GUALTA_API_KEY)
guAlta_model = "models/guAlta.onnx"             # .onnx (or fastai .pkl); downloaded if missing
guAlta_model_url = ""                           # published models (empty: guAlta_URL; on AWS the stack's ModelUrl)
guAlta_model_update = True                      # install a newer published model (False: keep this one)
guAlta_outbox = "gualta_outbox.sqlite"          # reports not yet delivered + real-time progress (keep it on local disk)
guAlta_satellite_check = True                   # flag trails that continue in the next/previous frame (satellites)
guAlta_faint_crossing_check = True              # follow a candidate's faintest lines into the next/previous frame
guAlta_fireball_check = True                    # report a bright, saturated streak in one frame only (fireballs)
guAlta_streak_check = True                      # report a thin streak in one frame only (short or faint meteors)
guAlta_cloud_check = True                       # flag a candidate with no streak explained by clouds changing next door
guAlta_lightning_check = True                   # flag a candidate explained by a flash lighting the sky (or its bolt)
guAlta_report_flagged = False                   # report flagged detections anyway (flagged satellite, cloud, lightning)
guAlta_threads = 0                              # model threads (0: one per CPU core)
guAlta_batch_size = 16                          # frames per model call (4 on a Pi short of memory: README "Speed")
guAlta_latitude = ""                            # the camera's place, degrees (e.g. 41.60 and 1.84, west negative):
guAlta_longitude = ""                           #   frames taken in daylight are then not scored (empty: all are)
guAlta_night_sun_altitude = -6                  # the sun's altitude below which it is night (AllSky's angle)
guAlta_camera_timezone = ""                     # the camera clock's zone if not this machine's (e.g. "UTC")
guAlta_mask = ""                                # frame image, black where the checks don't look (`guAlta.py mask`)

# Central service — only on the machine running `python guAlta.py serve` / `site`. API keys come from the
# environment (GUALTA_API_KEYS="obs01:key,obs02:key"), the Telegram token from GUALTA_TELEGRAM_TOKEN: never here.
guAlta_store = "gualta_store"                   # store: a folder, or s3://bucket[/prefix]
guAlta_site_time = "0900"                       # daily page build time (HHMM, local time)
guAlta_observatories = {}                       # ISS passes on the daily page need each observatory's place, e.g.
# {"obs01": {"lat": 41.60, "lon": 1.84, "elevation_m": 700, "name": "My roof", "tz": "Europe/Madrid"}}
# (with a place, its detections taken with the sun above "night_sun_altitude", default -6, are not posted)
