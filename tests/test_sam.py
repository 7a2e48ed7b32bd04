"""The SAM project: cfn-lint, the template's shape, the layer packaging, thin handlers, and the sample events."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cfnlint.decode import decode

from gualta import server, store
from helpers_service import REPO, service_env

SAM = REPO / "aws_lambda"
TEMPLATE = SAM / "template.yaml"


@pytest.fixture(scope="module")
def template():
    parsed, errors = decode(str(TEMPLATE))
    assert not errors
    return parsed


def test_cfn_lint_passes():
    run = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(TEMPLATE)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_functions_are_thin_handlers_on_a_modern_runtime(template):
    runtime = template["Globals"]["Function"]["Runtime"]
    assert re.fullmatch(r"python3\.(1[2-9])", runtime), runtime
    functions = {name: r["Properties"] for name, r in template["Resources"].items()
                 if r["Type"] == "AWS::Serverless::Function"}
    assert {f["CodeUri"] for f in functions.values()} == {"guAlta/", "generateWebsite/"}
    for props in functions.values():
        assert props["Handler"] == "app.lambda_handler"
        code = (SAM / props["CodeUri"] / "app.py").read_text()
        assert "from gualta import" in code and len(code.splitlines()) <= 8      # thin: the logic is in gualta


def test_api_route_keys_and_schedule(template):
    resources = template["Resources"]
    upload = resources["IngestFunction"]["Properties"]["Events"]["Upload"]["Properties"]
    assert (upload["Path"], upload["Method"]) == ("/uploadmeteor", "post")
    auth = resources["Api"]["Properties"]["Auth"]
    assert auth["ApiKeyRequired"] is True and auth["UsagePlan"]["CreateUsagePlan"] == "PER_API"
    daily = resources["WebsiteFunction"]["Properties"]["Events"]["Daily"]
    assert daily["Type"] == "ScheduleV2"
    assert template["Parameters"]["PageSchedule"]["Default"] == "cron(0 9 * * ? *)"
    assert daily["Properties"]["ScheduleExpressionTimezone"] == {"Ref": "TimeZone"}
    assert daily["Properties"]["OmitName"] is True            # SAM's fixed name stopped a second stack deploying


def test_secrets_come_from_ssm_and_policies_are_scoped(template):
    ingest = template["Resources"]["IngestFunction"]["Properties"]
    variables = ingest["Environment"]["Variables"]
    assert variables["GUALTA_API_KEYS_PARAM"] == {"Ref": "ApiKeysParameterName"}
    assert variables["GUALTA_TELEGRAM_TOKEN_PARAM"] == {"Ref": "TelegramTokenParameterName"}
    text = TEMPLATE.read_text()
    assert "GUALTA_TELEGRAM_TOKEN:" not in text and "GUALTA_API_KEYS:" not in text
    for name in ("IngestFunction", "WebsiteFunction"):
        for policy in template["Resources"][name]["Properties"]["Policies"]:
            for statement in policy["Statement"]:
                statement = statement.get("Fn::If", [None, statement])[1]            # a grant on a condition
                assert "*" not in json.dumps(statement["Action"])                    # no wildcard actions
                assert statement["Resource"] != "*"
    public = template["Resources"]["BucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]["Resource"]
    website_configuration = template["Resources"]["Bucket"]["Properties"]["WebsiteConfiguration"]
    assert website_configuration["ErrorDocument"] == store.MISSING_PAGE           # a page not made yet says when
    assert {"Fn::Sub": "${Bucket.Arn}/*.html"} in public                           # ... and it can be read
    assert not any(folder in json.dumps(r) for r in public for folder in ("detections", "logs", "pages"))
    website_statements = template["Resources"]["WebsiteFunction"]["Properties"]["Policies"][0]["Statement"]
    conditional = [statement["Fn::If"] for statement in website_statements if "Fn::If" in statement]
    website = [statement for statement in website_statements if "Fn::If" not in statement]
    on_pages = {action for statement in website if "/pages/*" in json.dumps(statement["Resource"])
                for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])}
    assert on_pages == {"s3:GetObject", "s3:PutObject"}     # what each page was made from (site.stale_nights)
    assert {statement["Action"] for statement in website if "/pages/late/*" in json.dumps(statement["Resource"])} \
        == {"s3:DeleteObject"}                                # late marks taken off (site.refresh_stale), nothing else
    assert [resource for statement in website if statement["Action"] == "s3:DeleteObject"
            for resource in statement["Resource"]] == [{"Fn::Sub": "${Bucket.Arn}/pages/late/*"},
                                                       {"Fn::Sub": "${Bucket.Arn}/telegram/unsent/*"}]   # marks only
    website_env = template["Resources"]["WebsiteFunction"]["Properties"]["Environment"]["Variables"]
    assert website_env["GUALTA_TELEGRAM_TOKEN_PARAM"] == variables["GUALTA_TELEGRAM_TOKEN_PARAM"]   # posts again
    assert "GUALTA_N2YO_KEY:" not in text and "NoEcho" not in text           # no secret as a parameter or variable
    assert website_env["GUALTA_N2YO_KEY_PARAM"]["Fn::If"][:2] == ["HasN2yoKey", {"Ref": "N2yoKeyParameterName"}]
    assert [(condition, grant["Action"], absent) for condition, grant, absent in conditional] == [
        ("HasN2yoKey", "ssm:GetParameter", {"Ref": "AWS::NoValue"})]
    assert "parameter${N2yoKeyParameterName}" in json.dumps(conditional[0][1]["Resource"])
    assert template["Outputs"]["ModelUrl"]["Value"] == {"Fn::Sub": "https://${Bucket.RegionalDomainName}"}
    assert website_env["GUALTA_TELEGRAM_CHAT"] == ingest["Environment"]["Variables"]["GUALTA_TELEGRAM_CHAT"]
    allowed = {(action, json.dumps(resource)) for statement in website
               for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
               for resource in (statement["Resource"] if isinstance(statement["Resource"], list)
                                else [statement["Resource"]])}
    assert {action for action, resource in allowed if "/detections/*" in resource} == {"s3:GetObject", "s3:PutObject"}
    assert ("s3:GetObject", json.dumps({"Fn::Sub": "${Bucket.Arn}/imgs/*"})) in allowed
    assert ("s3:PutObject", json.dumps({"Fn::Sub": "${Bucket.Arn}/imgs/*"})) not in allowed
    assert any(action == "ssm:GetParameter" and "TelegramTokenParameterName" in resource
               for action, resource in allowed)


def test_layer_ships_the_package_and_its_dependencies(template):
    layer = template["Resources"]["GualtaLayer"]
    assert layer["Metadata"]["BuildMethod"] == template["Globals"]["Function"]["Runtime"]
    folder = SAM / layer["Properties"]["ContentUri"]
    assert (folder / "gualta").resolve() == (REPO / "gualta").resolve()                 # one copy of the code
    assert (folder / "gualta" / "templates" / "day.html").exists() and (folder / "gualta" / "data" / "iss.tle").exists()
    wanted = {re.split(r"[<>=\[]", line)[0].lower() for line in (folder / "requirements.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    server_extra = {re.split(r"[<>=\[]", d)[0].lower() for d in pyproject["project"]["optional-dependencies"]["server"]}
    assert server_extra <= wanted and "pillow" in wanted


@pytest.fixture
def env(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("GUALTA_")]:
        monkeypatch.delenv(key)
    values = service_env(tmp_path / "store", GUALTA_API_KEYS="obs01:sample-key-obs01,obs02:sample-key-obs02")
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return tmp_path / "store"


def sample(name: str) -> dict:
    return json.loads((SAM / "events" / f"{name}.json").read_text())


def test_sample_events_through_the_handlers(env):
    ingest, website = server.load_handler("guAlta"), server.load_handler("generateWebsite")
    answers = {name: ingest(sample(name), None) for name in
               ("upload_log_start", "upload_detection", "upload_log_end", "upload_foreign_obs")}
    assert {n: a["statusCode"] for n, a in answers.items()} == {"upload_log_start": 200, "upload_detection": 200,
                                                                "upload_log_end": 200, "upload_foreign_obs": 403}
    assert json.loads(answers["upload_detection"]["body"])["key"] == "detections/20260916/obs01_20260916231507.json"
    assert ingest(sample("upload_detection"), None)["body"].count("duplicate") == 1
    built = website(sample("daily_day"), None)
    assert built["night"] == "20260916" and built["detections"] == 1
    html = (env / "20260916.html").read_text()
    assert 'id="obs01_20260916231507"' in html and "1,440 frames processed" in html
    assert re.fullmatch(r"[0-9]{8}", website(sample("daily_schedule"), None)["night"])


LAMBDA_RUN = """
import importlib, json, pathlib, sys
sam = pathlib.Path(sys.argv[1])
sys.path.insert(0, str(sam / "layer"))                    # /opt/python on AWS: the layer's gualta and packages
answers = {}
for function, events in (("guAlta", ["upload_log_start", "upload_detection", "upload_log_end"]),
                         ("generateWebsite", ["daily_day"])):
    sys.path.insert(0, str(sam / function))
    app = importlib.import_module("app")
    for name in events:
        answer = app.lambda_handler(json.loads((sam / "events" / f"{name}.json").read_text()), None)
        answers[name] = answer.get("statusCode", answer.get("detections"))
    sys.path.pop(0)
    del sys.modules["app"]
print(json.dumps(answers))
"""


def test_the_handlers_run_with_only_the_layers_requirements(env, tmp_path):
    """What the layer installs (aws_lambda/layer/requirements.txt) is all the handlers need: they run the sample
    events with every other installed package unimportable (numpy, OpenCV and onnxruntime among them)."""
    from helpers_client import only_installed_command

    layer = [line for line in (SAM / "layer" / "requirements.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    (tmp_path / "run.py").write_text(LAMBDA_RUN)
    command, blocked = only_installed_command(layer, tmp_path / "run.py", str(SAM))
    assert {"cv2", "onnxruntime", "torch", "pandas"} <= set(blocked.split(","))
    run = subprocess.run(command, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "GUALTA_TEST_BLOCKED": blocked})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == {"upload_log_start": 200, "upload_detection": 200,
                                                       "upload_log_end": 200, "daily_day": 1}
    assert 'id="obs01_20260916231507"' in (env / "20260916.html").read_text()
