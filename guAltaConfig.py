"""guAlta operator settings — the thesis' keys. Edit this file for your observatory.

Every key can be overridden by an environment variable GUALTA_<KEY> (e.g. GUALTA_THRESHOLD=0.9) or a CLI flag.
"""

guAlta_main_folder = "/home/pi/allsky/images"   # AllSky images root: one YYYYMMDD folder per night
guAlta_start_time = "2000"                      # real-time window start (HHMM, local time)
guAlta_end_time = "0800"                        # real-time window end (may be after midnight)
guAlta_obs_id = "obs01"                         # this observatory's id (letters, digits, - and _)
guAlta_URL = "http://127.0.0.1:8765"            # central service (embedded server or API Gateway stage URL)
guAlta_enable_telegram = True                   # ask the service to post detections to Telegram
guAlta_enable_extra_log = False                 # per-frame lines: path , label , p_meteor , p_no_meteor
guAlta_threshold = 0.85                         # meteor score at or above which a frame is a detection
guAlta_sleep_between_imgs = 10                  # seconds between polls of the night folder in real time
guAlta_api_key = ""                             # this observatory's key for guAlta_URL (better: env GUALTA_API_KEY)

# Central service — only on the machine running `python guAlta.py serve` / `site`. API keys come from the
# environment (GUALTA_API_KEYS="obs01:key,obs02:key"), the Telegram token from GUALTA_TELEGRAM_TOKEN: never here.
guAlta_store = "gualta_store"                   # store: a folder, or s3://bucket[/prefix]
guAlta_site_time = "0900"                       # daily page build time (HHMM, local time)
guAlta_observatories = {}                       # ISS passes on the daily page need each observatory's place, e.g.
# {"obs01": {"lat": 41.60, "lon": 1.84, "elevation_m": 700, "name": "My roof", "tz": "Europe/Madrid"}}
