"""The local endpoint's HTTP server: moto's WSGI app served by cheroot, over HTTPS, with keep-alive.

Why not moto's own ``ThreadedMotoServer`` (werkzeug's development server): it answers every
request with ``Connection: close`` (werkzeug cannot drain an unread request body) and starts a
thread per connection, so every AWS call made a new TCP connection, a TLS handshake on both sides
and a thread. One landing file costs the pipeline ~690 calls (Glue job runs polled, job
libraries checked, the Iceberg commit's objects written, ...): twenty files landing together
were ~14,000 handshakes, and the endpoint process spent most of its CPU on them. cheroot (the
CherryPy project's WSGI server) keeps HTTP/1.1 connections open, so each client (a boto3
client, pyarrow's S3 filesystem) pays one handshake, and serves requests from a pool of
threads while idle connections wait in its selector.

What moto's request handler adds and this one does not: the original spelling of headers with
an underscore (S3 user metadata such as ``x-amz-meta-my_key`` reads back as ``my-key``); nothing
in the pipeline writes such metadata.
"""
import io
import socket
import threading

# Requests served at once. A request holds its thread for as long as it runs (an SQS long poll up
# to its WaitTimeSeconds); idle keep-alive connections hold none.
WORKER_THREADS = 48
# A chunked request body is read in pieces of this size.
_READ_PIECE_BYTES = 1024 * 1024
# Connections waiting to be accepted (the listen backlog): a burst of job processes connects at once.
LISTEN_BACKLOG = 256
# Seconds an idle keep-alive connection (or a slow request's socket read) is kept before the
# server closes it; clients reconnect by themselves.
SOCKET_TIMEOUT_SECONDS = 60
# Idle keep-alive connections kept open at once. cheroot's default, 10, closed the rest after
# each response: in a 20-file burst about 2,400 calls (the query engine's object downloads, the
# .sync checks) found their pooled connection dropped and paid a new TCP and TLS handshake, both
# ends in the stack's process. Each connection is one descriptor here (two when the client is
# the stack itself): the stack's pools (local/embedded.py) plus the job processes' stay below it.
KEEP_ALIVE_CONNECTIONS = 384
SHUTDOWN_SECONDS = 0.2


class HttpsServer:
    """``app`` (a WSGI callable) served at ``ip_address:port`` (0: any free port), over HTTPS
    when ``certificate`` and ``private_key`` (PEM files) are given. ``start()``, ``stop()`` and
    ``get_host_and_port()`` as moto's ``ThreadedMotoServer``."""

    def __init__(self, app, ip_address, port, certificate=None, private_key=None):
        from cheroot import wsgi

        def with_raw_uri(environ, start_response):
            # moto matches and verifies signatures against the path as sent (S3 keys such as
            # ``month=2024-01`` arrive percent-encoded); werkzeug's server names it RAW_URI.
            environ.setdefault("RAW_URI", environ.get("REQUEST_URI"))
            if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
                # boto3 uploads chunked. cheroot's chunked reader appends chunk after chunk to one
                # bytes object (quadratic: a 40 MB wheel took seconds): read it in bounded pieces.
                pieces = []
                while True:
                    piece = environ["wsgi.input"].read(_READ_PIECE_BYTES)
                    if not piece:
                        break
                    pieces.append(piece)
                body = b"".join(pieces)
                environ["wsgi.input"] = io.BytesIO(body)
                environ["CONTENT_LENGTH"] = str(len(body))
            return app(environ, start_response)

        # On stop, a worker still in a request (an SQS long poll) is waited for SHUTDOWN_SECONDS,
        # then left to end on its own: every stop of a stack waited a whole second.
        self._server = wsgi.Server((ip_address, port), with_raw_uri, numthreads=WORKER_THREADS,
                                   timeout=SOCKET_TIMEOUT_SECONDS, server_name="shipping-etl-local",
                                   shutdown_timeout=SHUTDOWN_SECONDS, request_queue_size=LISTEN_BACKLOG)
        self._server.keep_alive_conn_limit = KEEP_ALIVE_CONNECTIONS
        if certificate:
            self._server.ssl_adapter = _handshake_in_worker(certificate, private_key)
        self._thread = None

    def start(self):
        """Binds the port and serves on a daemon thread; returns once connections are accepted."""
        self._server.prepare()
        self._thread = threading.Thread(target=self._server.serve, name="aws-endpoint", daemon=True)
        self._thread.start()

    def get_host_and_port(self):
        host, port = self._server.bind_addr[:2]
        return str(host), port

    def stop(self):
        self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _handshake_in_worker(certificate, private_key):
    """cheroot's TLS adapter, but the handshake happens on the connection's first read, in the
    worker thread that serves it: cheroot's own adapter handshakes in its one accepting thread,
    where a client slow to answer (a job process starved of CPU on a busy laptop) held up every
    other connection until clients gave up connecting."""
    from cheroot.ssl.builtin import BuiltinSSLAdapter

    class Adapter(BuiltinSSLAdapter):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.context.sslsocket_class = _socket_class()

        def wrap(self, sock):
            tls = self.context.wrap_socket(sock, do_handshake_on_connect=False, server_side=True)
            return tls, {"wsgi.url_scheme": "https", "HTTPS": "on"}

    return Adapter(certificate, private_key)


_PLAIN_HTTP_ANSWER = b"This endpoint speaks HTTPS only: use https:// and trust the stack's CA (AWS_CA_BUNDLE).\n"


def _socket_class():
    import ssl

    from cheroot import errors

    class HandshakeOnFirstRead(ssl.SSLSocket):
        """A server-side TLS socket that completes its handshake on the first read. A failed
        handshake (a client that does not trust the stack's CA, one that hangs up, plain HTTP)
        ends the connection quietly, as cheroot's own adapter does: read implicitly, the
        failure reached cheroot as a socket error mid-request, which it logged with a traceback
        before failing again to send a 500 over the broken TLS. A plain-HTTP client gets a
        plain 400 saying to use HTTPS."""

        _handshaken = False

        def _handshake(self):
            if self._handshaken:
                return
            try:
                self.do_handshake()
            except ssl.SSLError as exc:
                if getattr(exc, "reason", None) == "HTTP_REQUEST":
                    self._answer_plain_http()
                raise errors.FatalSSLAlert(str(exc)) from exc
            except OSError as exc:  # reset, EOF or timeout mid-handshake
                raise errors.FatalSSLAlert(str(exc)) from exc
            self._handshaken = True

        def _answer_plain_http(self):
            head = ("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                    "Connection: close\r\n\r\n" % len(_PLAIN_HTTP_ANSWER)).encode("ascii")
            try:
                socket.socket.sendall(self, head + _PLAIN_HTTP_ANSWER)  # on the TCP socket, unencrypted
            except OSError:
                pass

        def recv_into(self, buffer, nbytes=0, flags=0):
            self._handshake()
            return super().recv_into(buffer, nbytes, flags)

        def recv(self, buflen=1024, flags=0):
            self._handshake()
            return super().recv(buflen, flags)

    return HandshakeOnFirstRead
