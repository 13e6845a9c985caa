"""`chalice package --pkg-format terraform` on a copy of the project, without AWS: what the
Lambdas would be deployed with (runtime, zip contents, policy, API authorization)."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from chalicelib.resources import Resources
from chalicelib.settings import Settings
from deploy import policies

REPO_ROOT = Path(__file__).resolve().parent.parent
STAGE = "dev"
REGION = "us-east-1"
ACCOUNT = "123456789012"
RESOURCES = Resources(stage=STAGE, account_id=ACCOUNT, region=REGION)
# Libraries the local stack and the Glue jobs use; none belongs in a Lambda zip.
HEAVY = ("pandas", "pyarrow", "duckdb", "numpy", "awswrangler", "polars", "moto", "sqlglot")
CHALICE = str(Path(sys.executable).with_name("chalice"))


@pytest.fixture(scope="module")
def package(package_dir):
    """(terraform document, zip member names) of the dev stage's package."""
    document = json.loads((package_dir / "chalice.tf.json").read_text())
    with zipfile.ZipFile(package_dir / "deployment.zip") as archive:
        names = archive.namelist()
    return document, names


def build_package(tmp_path_factory):
    """The folder `chalice package --pkg-format terraform --stage dev` writes (chalice.tf.json,
    deployment.zip) for a copy of the project."""
    project = tmp_path_factory.mktemp("project")
    for name in ("app.py", "requirements.txt"):
        shutil.copy(REPO_ROOT / name, project / name)
    shutil.copytree(REPO_ROOT / "chalicelib", project / "chalicelib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (project / ".chalice").mkdir()
    shutil.copy(REPO_ROOT / ".chalice" / "config.json", project / ".chalice" / "config.json")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("AWS_") and key != "MOTO_ACCOUNT_ID"}
    # As docs/DEPLOY.md's offline check from a fresh clone: no credentials, no AWS call.
    written = subprocess.run([sys.executable, "-m", "deploy", "up", "--stage", STAGE, "--offline",
                              "--account-id", ACCOUNT, "--region", REGION, "--project-dir", str(project)],
                             cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert written.returncode == 0, written.stdout + written.stderr
    assert "(no AWS call)" in written.stdout
    env.update(AWS_DEFAULT_REGION=REGION, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    out = project / "out"
    completed = subprocess.run([CHALICE, "package", "--pkg-format", "terraform", "--stage", STAGE,
                                str(out)], cwd=project, env=env, capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    # chalice skips a dependency it cannot get for the Lambda runtime with only a warning.
    assert "Could not install dependencies" not in completed.stdout + completed.stderr
    return out


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory):
    return build_package(tmp_path_factory)


def test_zip_holds_the_app_and_no_heavy_library(package):
    _document, names = package
    top_level = {name.split("/", 1)[0] for name in names}
    assert "app.py" in names and "chalicelib/settings.py" in names
    assert "faker" in top_level  # the one thing requirements.txt asks for
    assert not [name for name in top_level if name.split("-")[0].split(".")[0] in HEAVY]
    assert not any(name.startswith(("glue/", "deploy/", "local/", "tests/")) for name in names)


def test_every_function_runs_python_3_11_with_the_stage_environment(package):
    document, _names = package
    functions = document["resource"]["aws_lambda_function"]
    assert set(functions) == {"on_landing", "generate_batch", "reconcile", "maintain_lake", "api_handler"}
    expected = Settings(stage=STAGE, account_id=ACCOUNT, region=REGION).lambda_environment()
    for function in functions.values():
        assert function["runtime"] == "python3.11"
        assert function["environment"]["variables"] == expected


def test_each_function_gets_its_own_role_and_policy(package):
    document, _names = package
    functions = document["resource"]["aws_lambda_function"]
    roles = document["resource"]["aws_iam_role_policy"]
    expected = policies.lambda_policies(RESOURCES)
    assert len({function["role"] for function in functions.values()}) == len(functions) == 5
    for key, function in functions.items():
        role_resource = function["role"].split(".")[1]  # "${aws_iam_role.<name>.arn}"
        assert json.loads(roles[role_resource]["policy"]) == expected[key], key


def test_functions_are_named_as_the_deploy_expects(package):
    # The deploy makes their log groups (retention, key) and scopes their policy by these names.
    document, _names = package
    functions = document["resource"]["aws_lambda_function"].values()
    assert sorted(f["function_name"] for f in functions) == sorted(RESOURCES.lambda_functions)
    assert "aws_cloudwatch_log_group" not in document["resource"]


def test_status_api_requires_iam_signatures(package):
    document, _names = package
    swagger = json.loads(document["locals"]["chalice_api_swagger"])
    assert swagger["securityDefinitions"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    operations = {(path, method): operation for path, methods in swagger["paths"].items()
                  for method, operation in methods.items()}
    assert ("/status", "get") in operations
    for route, operation in operations.items():
        assert operation.get("security") == [{"sigv4": []}], route
