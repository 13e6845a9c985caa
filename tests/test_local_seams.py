"""The local stack's seams: one command line for run and up, fault injection in one module, and
moto's speed-only patches apart from the behaviour patches, switchable off."""
import os

import pytest

from chalicelib.resources import Resources
from chalicelib.settings import Settings
from local import cli, embedded, faults


def test_run_and_up_are_parsed_in_one_place():
    parser = cli.build_parser()

    run = parser.parse_args(["run", "--file", "a.json", "--file", "b.json", "--key", "incoming/same.json",
                             "--fail", "trigger", "--fail-once", "normalize"])
    up = parser.parse_args(["up", "--port", "0", "--every-minutes", "2"])

    assert (run.command, run.files, run.key, run.fail, run.fail_once) == (
        "run", ["a.json", "b.json"], "incoming/same.json", ["trigger"], ["normalize"])
    assert (up.command, up.port, up.every_minutes) == ("up", 0, 2.0)


@pytest.mark.parametrize("key", ["elsewhere/a.json", "incoming/", "incoming/../x.json", "incoming/a\\b.json"])
def test_a_bad_landing_key_is_refused_on_the_command_line(key, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["run", "--file", "a.json", "--key", key])

    assert exited.value.code == 2
    assert "--key" in capsys.readouterr().err


def test_every_fault_step_has_a_target_and_an_unknown_one_is_refused():
    resources = Resources.from_settings(Settings(stage="local"))

    targets = {step: faults.target(resources, step) for step in faults.FAULT_STEPS}

    assert targets["trigger"] == ("trigger", None)
    assert targets["json-to-parquet"] == ("job", resources.json_to_parquet_job)
    with pytest.raises(ValueError, match="unknown step"):
        faults.target(resources, "nope")


def test_a_trigger_fault_fails_each_objects_first_delivery_only_with_fail_once():
    table = faults.Faults()
    delivered = []
    trigger = faults.FaultyTrigger(lambda name, event: delivered.append(name) or "ok", table, "on_landing")
    event = {"Records": [{"s3": {"object": {"key": "incoming/a.json"}}}]}
    table.fail(("trigger", None), "trigger", once=True)

    with pytest.raises(faults.InjectedFault, match="--fail-once trigger"):
        trigger("on_landing", event)
    assert trigger("on_landing", event) == "ok"
    assert trigger("generate_batch", {}) == "ok"  # other handlers are not the trigger
    assert delivered == ["on_landing", "generate_batch"]


@pytest.mark.parametrize("value, wanted", [(None, True), ("", True), ("1", True), ("0", False),
                                           ("off", False), ("false", False)])
def test_speed_patches_switch(value, wanted):
    environ = {} if value is None else {"LOCAL_MOTO_SPEED_PATCHES": value}
    assert embedded.speed_patches_wanted(environ) is wanted


def test_without_speed_patches_only_the_behaviour_patches_are_installed(tmp_path):
    from moto import backends
    from moto.glue.models import GlueBackend

    plain_listing = backends.list_of_moto_modules
    plain_start = GlueBackend.start_job_run
    with embedded.start(work_dir=str(tmp_path), speed_patches=False) as stack:
        assert backends.list_of_moto_modules is plain_listing  # a speed patch: left out
        assert GlueBackend.start_job_run is not plain_start  # a behaviour patch: in
        assert "Buckets" in stack.client("s3").list_buckets()
        assert "local.fork_warmup" not in stack.job_runner.preload
    with embedded.start(work_dir=str(tmp_path)) as stack:
        assert backends.list_of_moto_modules is not plain_listing
        assert "local.fork_warmup" in stack.job_runner.preload
    assert backends.list_of_moto_modules is plain_listing


def test_forked_job_runs_share_botocore_parsed_files_in_the_fork_server_only():
    """local/fork_warmup.py, as the fork server imports it: a job run's new sessions find the
    service models parsed (no json.loads), and each still has a session and client of its own."""
    import subprocess
    import sys

    probe = (
        "import json, os, boto3, local.fork_warmup\n"
        "parsed = []\n"
        "loads = json.loads\n"
        "json.loads = lambda *a, **k: parsed.append(1) or loads(*a, **k)\n"
        "one, two = boto3.session.Session(), boto3.session.Session()\n"
        "s3 = one.client('s3', region_name='eu-west-1')\n"
        "glue = two.client('glue', region_name='eu-west-1')\n"
        "print(len(parsed), one is not two, s3.meta.region_name, "
        "one._session.get_credentials().access_key)\n")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="the-run-key", AWS_SECRET_ACCESS_KEY="s")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "True", "eu-west-1", "the-run-key"]
