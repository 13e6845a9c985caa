"""The local endpoint's TLS: a CA and a server certificate for 127.0.0.1 and localhost, made at
every start (valid one day), so the stack speaks HTTPS as AWS does and the TLS-only bucket
policies can be applied. Clients trust it through the CA file (``AWS_CA_BUNDLE``); nothing is
added to the system's trust store."""
import atexit
import datetime
import ipaddress
import os
import ssl
import tempfile


def make_certificates(folder):
    """Write ``ca.pem``, ``server.pem`` and ``server-key.pem`` into ``folder``; returns their
    paths (ca, certificate, private key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    os.makedirs(folder, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Shipping ETL local stack CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([
                  x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = tuple(os.path.join(folder, name) for name in ("ca.pem", "server.pem", "server-key.pem"))
    with open(paths[0], "wb") as handle:
        handle.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as handle:
        handle.write(server.public_bytes(serialization.Encoding.PEM))
    descriptor = os.open(paths[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return paths


def _machine_cas():
    """The machine's trusted CAs (PEM bytes): the file OpenSSL would use, else certifi's."""
    candidates = [ssl.get_default_verify_paths().cafile, ssl.get_default_verify_paths().openssl_cafile]
    try:
        import certifi

        candidates.append(certifi.where())
    except ImportError:
        pass
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            with open(candidate, "rb") as handle:
                return handle.read().rstrip(b"\n") + b"\n"
    return b""


def trust_early():
    """Point ``SSL_CERT_FILE`` at this process's trust bundle (the machine's CAs, and later every
    local stack's CA: ``trust``) and return its path. pyarrow's S3 client, which pyiceberg reads
    and writes the Iceberg table with, takes no ``AWS_CA_BUNDLE``; it reads ``SSL_CERT_FILE`` once,
    when ``pyarrow.fs`` loads, and the file's contents at each connection. So this runs before
    anything imports pyarrow (``local/__init__.py``, ``tests/conftest.py``); the Glue jobs the
    stack starts inherit the variable. The machine's CAs stay in, so other HTTPS (pip) verifies."""
    current = os.environ.get("SSL_CERT_FILE")
    path = os.path.join(tempfile.gettempdir(), "shipping-etl-trust-%d.pem" % os.getpid())
    if current == path and os.path.isfile(path):
        return path
    machine = b""
    if current and os.path.isfile(current):
        with open(current, "rb") as handle:
            machine = handle.read().rstrip(b"\n") + b"\n"
    with open(path, "wb") as out:
        out.write(machine or _machine_cas())
    atexit.register(_remove, path)
    os.environ["SSL_CERT_FILE"] = path
    return path


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def trust(ca_path):
    """Add the CA ``ca_path`` to this process's trust bundle (``trust_early``); returns its path."""
    path = trust_early()
    with open(ca_path, "rb") as handle, open(path, "ab") as out:
        out.write(handle.read())
    return path
