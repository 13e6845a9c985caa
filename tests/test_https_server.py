"""The local endpoint's HTTPS server (local/https_server.py): connections are kept open across
requests, a client that never finishes its TLS handshake holds up no one else, the path reaches
moto as sent (RAW_URI), and a chunked upload arrives whole."""
import http.client
import socket
import ssl
import time

import pytest

from local import tls
from local.https_server import HttpsServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ca, certificate, key = tls.make_certificates(str(tmp_path_factory.mktemp("tls")))
    seen = []

    def app(environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        seen.append({"port": environ["REMOTE_PORT"], "raw_uri": environ.get("RAW_URI"),
                     "scheme": environ["wsgi.url_scheme"], "body": body})
        reply = b"%d" % len(body)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(reply)))])
        return [reply]

    running = HttpsServer(app, "127.0.0.1", 0, certificate, key)
    errors = []
    # What cheroot would log (to stderr): every message, tracebacks included.
    running._server.error_log = lambda msg="", level=20, traceback=False: errors.append((msg, traceback))
    running.start()
    host, port = running.get_host_and_port()
    context = ssl.create_default_context(cafile=ca)
    yield {"host": host, "port": port, "context": context, "seen": seen, "errors": errors}
    running.stop()


def _connection(server):
    return http.client.HTTPSConnection(server["host"], server["port"], context=server["context"], timeout=10)


def test_requests_share_one_connection(server):
    server["seen"].clear()
    connection = _connection(server)
    for _ in range(5):
        connection.request("GET", "/bucket/key")
        response = connection.getresponse()
        assert response.status == 200 and response.read() == b"0"
        assert response.getheader("Connection", "").lower() != "close"
    connection.close()
    assert len({request["port"] for request in server["seen"]}) == 1
    assert {request["scheme"] for request in server["seen"]} == {"https"}


def test_forty_idle_connections_all_stay_open(server):
    """cheroot keeps 10 idle keep-alive connections by default and closes the rest after their
    response: a burst's concurrent clients then re-connected (and re-handshook) on most calls."""
    server["seen"].clear()
    connections = [_connection(server) for _ in range(40)]
    for _ in range(3):
        for connection in connections:  # each waits idle while the 39 others are used
            connection.request("GET", "/bucket/key")
            response = connection.getresponse()
            assert response.status == 200 and response.read() == b"0"
            assert response.getheader("Connection", "").lower() != "close"
    for connection in connections:
        connection.close()
    assert len(server["seen"]) == 120
    assert len({request["port"] for request in server["seen"]}) == 40


def test_the_path_reaches_the_app_as_sent(server):
    server["seen"].clear()
    connection = _connection(server)
    connection.request("PUT", "/bucket/data/shipping_date_month%3D2024-01/part.parquet", body=b"x")
    assert connection.getresponse().read() == b"1"
    connection.close()
    assert server["seen"][-1]["raw_uri"] == "/bucket/data/shipping_date_month%3D2024-01/part.parquet"


def test_a_chunked_body_arrives_whole(server):
    payload = bytes(range(256)) * 12_000  # 3 MB, sent as 8 KB chunks
    chunks = (payload[i:i + 8192] for i in range(0, len(payload), 8192))
    connection = _connection(server)
    connection.request("PUT", "/bucket/big", body=chunks, encode_chunked=True,
                       headers={"Transfer-Encoding": "chunked"})
    assert connection.getresponse().read() == str(len(payload)).encode()
    connection.close()
    assert server["seen"][-1]["body"] == payload


def test_a_client_stuck_before_its_handshake_blocks_no_one(server):
    stuck = socket.create_connection((server["host"], server["port"]))  # says nothing
    try:
        time.sleep(0.2)
        started = time.monotonic()
        connection = _connection(server)
        connection.request("GET", "/bucket/key")
        assert connection.getresponse().status == 200
        connection.close()
        assert time.monotonic() - started < 5
    finally:
        stuck.close()


def _server_errors(server):
    return list(server["errors"])


def test_a_client_that_does_not_trust_the_ca_is_refused_quietly(server):
    """The client sees the certificate failure; the server logs no traceback and goes on serving."""
    server["errors"].clear()
    untrusted = http.client.HTTPSConnection(server["host"], server["port"], context=ssl.create_default_context(),
                                            timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        untrusted.request("GET", "/bucket/key")
    untrusted.close()
    connection = _connection(server)
    connection.request("GET", "/bucket/key")
    assert connection.getresponse().status == 200
    connection.close()
    time.sleep(0.2)
    assert _server_errors(server) == []


def test_plain_http_gets_a_400_saying_to_use_https(server):
    server["errors"].clear()
    plain = http.client.HTTPConnection(server["host"], server["port"], timeout=10)
    plain.request("GET", "/bucket/key")
    response = plain.getresponse()
    assert response.status == 400 and b"HTTPS" in response.read()
    plain.close()
    time.sleep(0.2)
    assert _server_errors(server) == []
