"""The one entry point of the Glue job scripts: where the shared code is found, arguments
(the job's own, plus the catalog step's), logging, error reporting and the exit status.

A job script starts with ``import jobentry`` (which makes ``chalicelib`` importable from a
checkout as well as from the ``--extra-py-files`` zip), parses its arguments with ``start`` and
ends with ``jobentry.main(main)``. Imports jobio and catalog; neither imports it (nor each other
back: catalog uses jobio, jobio uses neither).
"""
import os
import sys

try:
    import chalicelib  # noqa: F401  (on Glue: from the --extra-py-files zip)
except ImportError:  # run from a checkout: chalicelib lives next to this script's folder
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import catalog
import jobio


class Job:
    """One run's arguments: ``args`` (``{name: value}``), ``threads`` (int or None),
    ``storage`` (jobio.Storage), ``catalog`` (the catalog module when the catalog step was asked
    for, else None) and ``catalog_only`` (the run is the catalog check alone)."""

    def __init__(self, args, storage):
        self.args = args
        self.threads = jobio.positive_int(args, "threads")
        self.storage = storage or jobio.Storage()
        self.catalog = catalog if catalog.enabled(args) else None
        self.catalog_only = catalog.catalog_only(args)

    def recheck(self):
        """The whole ``--catalog_only`` run; returns the decision."""
        return catalog.recheck(self.args, self.storage)


# What every run is told besides its own arguments: Glue's job name, the stage (a default argument
# of the job) and the execution that started it, for the JSON log lines (jobio.log_context).
LOG_OPTIONS = {"JOB_NAME": "", "stage": "", "execution_name": ""}


def start(argv, required, optional, storage=None):
    """Parses Glue-style ``argv`` with the job's ``required`` names and ``optional`` defaults and
    the catalog step's options; from then on the job logs JSON lines naming its stage, source and
    execution. Returns a Job; raises JobError naming what is wrong."""
    options = dict(LOG_OPTIONS)
    options.update(optional)
    options.update(catalog.OPTIONS)
    args = jobio.parse_args(argv, required, options)
    script = os.path.splitext(os.path.basename(sys.argv[0] or "job"))[0].replace("_", "-")
    jobio.log_context(args.get("JOB_NAME") or script, args.get("stage"), source_id=args.get("source_id"),
                      execution=args.get("execution_name"))
    return Job(args, storage)


def main(job):
    """Runs ``job(argv)`` as the script's main program and exits with its status: 0 on success,
    1 with the error as the last stderr line (jobio.run)."""
    sys.exit(jobio.run(job))
