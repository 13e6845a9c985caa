"""Speed only, in the fork server of the local Glue runner (local/glue_runner.py): botocore's data
files are parsed once there and every forked job run shares them.

Each boto3 session has its own botocore loader, and a job run's first clients parse the service
models, endpoints.json and the endpoint rule sets again: about 0.2 s of ``json.loads`` per run
(measured with cProfile in a forked normalize run), 40 runs in a 20-file burst. Here the fork
server keeps one loader per data path and loads what the jobs' clients read before it forks, so a
run's ``boto3.session.Session()`` finds them parsed. botocore already hands one parsed model to
every client of a session; this shares it between sessions too. No session, client or credential
is shared: each run still resolves its own from its environment.

Importing it installs it: only the fork server imports it, preloaded when the stack installs
moto's speed-only patches (local/embedded.py), so ``LOCAL_MOTO_SPEED_PATCHES=0`` leaves botocore
as it is there too. On Glue each run is a process of its own and none of this applies.
"""
import threading

import botocore.loaders
import botocore.session

# The services the jobs' clients use (glue/: S3, Glue; pyiceberg's Glue catalog; STS for a role).
WARM_SERVICES = ("s3", "glue", "sts")
_loaders = {}  # the data path (AWS_DATA_PATH) -> its one loader
_loaders_lock = threading.Lock()


def shared_loader(search_path_string=None, _create=botocore.loaders.create_loader):
    """botocore's ``create_loader``, but one loader (and so one cache of parsed files) per data path."""
    with _loaders_lock:
        if search_path_string not in _loaders:
            _loaders[search_path_string] = _create(search_path_string)
        return _loaders[search_path_string]


def install():
    """Points botocore's sessions at the shared loaders and fills the default one."""
    botocore.session.create_loader = shared_loader
    session = botocore.session.Session()
    for service in WARM_SERVICES:
        # Fixed fake keys and region: making a client must not look for credentials (no
        # instance metadata calls from the fork server); only the parsed files stay behind.
        session.create_client(service, region_name="us-east-1", aws_access_key_id="warmup",
                              aws_secret_access_key="warmup")


install()
