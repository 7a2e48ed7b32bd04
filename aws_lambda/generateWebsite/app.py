"""generateWebsite Lambda: the daily page (schedule or {"day": "YYYYMMDD"}) → gualta.site (from the layer)."""
from gualta import site


def lambda_handler(event, context):
    return site.handle(event)
