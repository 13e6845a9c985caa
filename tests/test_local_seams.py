"""The local stack's seams: one command line for run and up, fault injection in one module, and
moto's speed-only patches apart from the behaviour patches, switchable off."""
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
    with embedded.start(work_dir=str(tmp_path)) as stack:
        assert backends.list_of_moto_modules is not plain_listing
    assert backends.list_of_moto_modules is plain_listing
