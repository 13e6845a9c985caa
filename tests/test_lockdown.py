"""The local stack's HTTP endpoints serve this machine's tools only: no CORS, loopback Host and
Origin only, bounded threads and socket timeouts on the app's server."""
import http.client
import ssl
import threading
import time

import pytest

from local import embedded, lockdown, serve


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    with embedded.start(work_dir=str(tmp_path_factory.mktemp("stack"))) as stack:
        yield stack


def request(port, method, path, headers, ca_bundle=None):
    """One raw request: HTTPS trusting ``ca_bundle`` (the AWS endpoint), else plain HTTP (the app)."""
    if ca_bundle:
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                                 context=ssl.create_default_context(cafile=ca_bundle))
    else:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


PREFLIGHT = {"Origin": "https://evil.example", "Access-Control-Request-Method": "PUT",
             "Access-Control-Request-Headers": "content-type"}


def test_a_foreign_preflight_gets_no_cors_from_the_aws_endpoint(endpoint):
    status, headers, _ = request(endpoint.port, "OPTIONS", "/", PREFLIGHT, endpoint.ca_bundle)

    assert "access-control-allow-origin" not in headers
    assert status == 403


def test_a_foreign_simple_request_is_refused_before_it_acts(endpoint):
    s3 = endpoint.client("s3")
    s3.create_bucket(Bucket="kept")
    # A form POST needs no preflight: it must be refused, not merely unreadable.
    status, headers, _ = request(endpoint.port, "POST", "/moto-api/reset",
                                 {"Origin": "https://evil.example", "Content-Length": "0"}, endpoint.ca_bundle)

    assert status == 403
    assert "access-control-allow-origin" not in headers
    assert "kept" in [b["Name"] for b in s3.list_buckets()["Buckets"]]  # no reset happened


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "192.168.1.5"])
def test_a_foreign_host_is_refused(endpoint, host):
    status, _, body = request(endpoint.port, "GET", "/", {"Host": host}, endpoint.ca_bundle)

    assert status == 403
    assert b"loopback" in body


def test_sdk_requests_still_work(endpoint):
    assert "Buckets" in endpoint.client("s3").list_buckets()


@pytest.mark.parametrize("host, allowed", [
    ("127.0.0.1:4566", True), ("localhost", True), ("bucket.localhost:5000", True), ("[::1]:8000", True),
    ("evil.example", False), ("localhost.evil.example", False), ("", False)])
def test_loopback_hosts(host, allowed):
    assert lockdown.is_loopback_host(host) is allowed


class Answer:
    def __init__(self, status_code=200, headers=None, body=b"{}"):
        self.status_code, self.headers, self.body = status_code, headers or {}, body


def test_the_app_server_refuses_foreign_origins_and_never_sends_cors():
    def handle(method, path, headers, body):
        return Answer(headers={"Access-Control-Allow-Origin": "*", "Content-Type": "application/json"})

    server = serve.AppServer(handle, port=0).start()
    try:
        status, headers, _ = request(server.port, "OPTIONS", "/status", PREFLIGHT)
        assert status == 403 and "access-control-allow-origin" not in headers
        status, headers, _ = request(server.port, "GET", "/status", {"Host": "evil.example"})
        assert status == 403
        status, headers, _ = request(server.port, "GET", "/status", {})
        assert status == 200 and "access-control-allow-origin" not in headers
    finally:
        server.stop()


def test_the_app_server_bounds_its_threads():
    inside, most, lock, release = [0], [0], threading.Lock(), threading.Event()

    def handle(method, path, headers, body):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        release.wait(5)
        with lock:
            inside[0] -= 1
        return Answer()

    server = serve.AppServer(handle, port=0).start()
    try:
        clients = [threading.Thread(target=request, args=(server.port, "GET", "/", {}))
                   for _ in range(serve.MAX_THREADS + 4)]
        for client in clients:
            client.start()
        time.sleep(1.0)
        assert most[0] == serve.MAX_THREADS
        release.set()
        for client in clients:
            client.join(10)
    finally:
        server.stop()
    assert serve._AppRequestHandler.timeout == serve.SOCKET_TIMEOUT_SECONDS
