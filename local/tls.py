"""The local endpoint's TLS: a CA and a server certificate for 127.0.0.1 and localhost, made at
every start (valid one day), so the stack speaks HTTPS as AWS does and the TLS-only bucket
policies can be applied. Clients trust it through the CA file (``AWS_CA_BUNDLE``); nothing is
added to the system's trust store."""
import datetime
import ipaddress
import os
import ssl


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


def trust_bundle(folder, ca_path):
    """Write ``trust.pem``: the machine's trusted CAs plus the stack's CA ``ca_path``; returns its
    path. It is the stack's ``SSL_CERT_FILE``: pyarrow's S3 client (what pyiceberg reads and
    writes the Iceberg table with, in the Glue jobs and the Athena engine) reads no
    ``AWS_CA_BUNDLE`` and pyiceberg passes it no CA file, but OpenSSL's default verify paths
    follow ``SSL_CERT_FILE``. The machine's CAs stay in so other HTTPS (pip) still verifies."""
    system = [os.environ.get("SSL_CERT_FILE"), ssl.get_default_verify_paths().cafile,
              ssl.get_default_verify_paths().openssl_cafile]
    try:
        import certifi

        system.append(certifi.where())
    except ImportError:
        pass
    path = os.path.join(folder, "trust.pem")
    with open(path, "wb") as out:
        for candidate in system:
            if candidate and os.path.isfile(candidate) and os.path.abspath(candidate) != os.path.abspath(path):
                with open(candidate, "rb") as handle:
                    out.write(handle.read().rstrip(b"\n") + b"\n")
                break
        with open(ca_path, "rb") as handle:
            out.write(handle.read())
    return path
