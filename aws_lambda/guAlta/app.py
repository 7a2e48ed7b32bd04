"""guAlta ingest Lambda: API Gateway REST proxy event for POST /uploadmeteor → gualta.ingest (from the layer)."""
from gualta import ingest


def lambda_handler(event, context):
    return ingest.handle(event)
