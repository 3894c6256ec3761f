"""``anpr-gateway-make-cert``: the site certificate, its files, and the ssl:
listener built from the endpoint string it prints (TLS 1.2 or newer only)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import pwd
import socket
import ssl
import stat
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from gateway.certs import (
    CertificateError,
    KeyType,
    endpoint_string,
    main,
    make_certificate,
    write_certificate,
)

NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)


def test_names_become_subject_alternative_names() -> None:
    site = make_certificate(["192.168.1.10", "Gateway.local", "fe80::1"], now=NOW)
    certificate = x509.load_pem_x509_certificate(site.certificate_pem)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.168.1.10"),
        ipaddress.ip_address("fe80::1"),
    ]
    assert san.get_values_for_type(x509.DNSName) == ["gateway.local"]
    common_name = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert [a.value for a in common_name] == ["192.168.1.10"]
    assert certificate.issuer == certificate.subject
    assert certificate.not_valid_before_utc == NOW - datetime.timedelta(days=1)
    assert certificate.not_valid_after_utc == NOW.replace(year=2036)
    key = certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    assert ":" in site.fingerprint_sha256 and len(site.fingerprint_sha256) == 95


def test_ecdsa_p256_and_years() -> None:
    site = make_certificate(["gateway.local"], key_type="ecdsa", years=2, now=NOW)
    certificate = x509.load_pem_x509_certificate(site.certificate_pem)
    key = certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert certificate.not_valid_after_utc == NOW.replace(year=2028)


def test_leap_day() -> None:
    leap = datetime.datetime(2028, 2, 29, tzinfo=datetime.timezone.utc)
    site = make_certificate(["gateway.local"], years=1, now=leap)
    assert site.not_valid_after == datetime.datetime(2029, 2, 28, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize(
    "names, error",
    [
        ([], "name at least one"),
        (["bad name"], "neither an IP address nor a host name"),
        (["-gateway"], "neither an IP address nor a host name"),
        (["gateway..local"], "neither an IP address nor a host name"),
    ],
)
def test_bad_names(names: list[str], error: str) -> None:
    with pytest.raises(CertificateError, match=error):
        make_certificate(names)


def test_years_bounded() -> None:
    with pytest.raises(CertificateError, match="1 to 30 years"):
        make_certificate(["gateway.local"], years=0)


def test_command_writes_key_0600_and_prints_the_endpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--dir", str(tmp_path), "--owner", "", "192.168.1.10", "gateway.local"]) == 0
    key, certificate = tmp_path / "site.key", tmp_path / "site.crt"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(certificate.stat().st_mode) == 0o644
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert certificate.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    out = capsys.readouterr().out
    assert f'"ssl:443:privateKey={key}:certKey={certificate}"' in out
    assert [p.name for p in tmp_path.iterdir()].count("site.key") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.crt", "site.key"]  # no leftovers


def test_command_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--dir", str(tmp_path), "--owner", "", "gateway.local"]) == 0
    key_before = (tmp_path / "site.key").read_bytes()
    capsys.readouterr()
    assert main(["--dir", str(tmp_path), "--owner", "", "other.local"]) == 1
    assert "use --force" in capsys.readouterr().err
    assert (tmp_path / "site.key").read_bytes() == key_before
    assert main(["--dir", str(tmp_path), "--owner", "", "--force", "other.local"]) == 0
    assert (tmp_path / "site.key").read_bytes() != key_before
    assert stat.S_IMODE((tmp_path / "site.key").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.crt", "site.key"]


def test_refuses_when_only_the_certificate_exists(tmp_path: Path) -> None:
    (tmp_path / "site.crt").write_text("the installer's own certificate")
    site = make_certificate(["gateway.local"])
    with pytest.raises(CertificateError, match="use --force"):
        write_certificate(site, tmp_path / "site.key", tmp_path / "site.crt")
    # Nothing was written, not even the key.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.crt"]


def test_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dir", str(tmp_path / "missing"), "--owner", "", "gateway.local"]) == 1
    assert "is not a directory" in capsys.readouterr().err
    assert main(["--dir", str(tmp_path), "--owner", "", "not a host"]) == 1
    assert "neither an IP address nor a host name" in capsys.readouterr().err
    assert main(["--dir", str(tmp_path), "--owner", "no-such-user-here", "gateway.local"]) == 1
    assert "no user" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_key_owned_by_the_service_user(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    assert main(["--dir", str(tmp_path), "--owner", "nobody", "gateway.local"]) == 0
    assert (tmp_path / "site.key").stat().st_uid == nobody.pw_uid


def test_endpoint_string_escapes_colons() -> None:
    assert (
        endpoint_string(8443, Path("/etc/a:b/site.key"), Path("/etc/site.crt"))
        == r"ssl:8443:privateKey=/etc/a\:b/site.key:certKey=/etc/site.crt"
    )


class Silent(Protocol):
    pass


def _handshake(
    port: int,
    minimum: ssl.TLSVersion,
    maximum: ssl.TLSVersion,
    cafile: str | None = None,
) -> str:
    """A blocking TLS client handshake to 127.0.0.1:port; the version agreed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1_1 is deprecated
        context.minimum_version = minimum
        context.maximum_version = maximum
    if minimum < ssl.TLSVersion.TLSv1_2:
        # OpenSSL 3 offers TLS 1.0/1.1 only at security level 0.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    if cafile is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        # A camera in "CA certificate" mode: the site certificate is its CA,
        # the address it dials must be in the certificate, strict X.509 checks.
        context.load_verify_locations(cafile)
        context.verify_flags |= ssl.VERIFY_X509_STRICT
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            version = tls.version()
            assert version is not None
            return version


def _tls11_possible_here(certificate: Path, key: Path) -> bool:
    """Whether this machine's OpenSSL can do a TLS 1.1 handshake at all, when
    the server allows it: otherwise a refused TLS 1.1 client proves nothing."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(certificate), str(key))
    try:
        server.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            server.minimum_version = ssl.TLSVersion.TLSv1_1
    except (ssl.SSLError, ValueError):
        return False
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(10)

    def serve() -> None:
        try:
            connection, _ = listener.accept()
            with server.wrap_socket(connection, server_side=True):
                pass
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        return _handshake(listener.getsockname()[1], ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_1) == "TLSv1.1"
    except (OSError, ssl.SSLError):
        return False
    finally:
        thread.join(10)
        listener.close()


@pytest.mark.e2e
class SiteListenerTests(TestCase):
    """An ``ssl:`` listener built from the printed endpoint string, on 127.0.0.1."""

    async def _serve(self, key_type: KeyType) -> tuple[int, Path, Path, Any]:
        """Listen; return the port, key and certificate paths, and the endpoint."""
        directory = Path(self.mktemp())
        directory.mkdir()
        site = make_certificate(["127.0.0.1", "localhost"], key_type=key_type)
        key, certificate = directory / "site.key", directory / "site.crt"
        write_certificate(site, key, certificate)
        description = endpoint_string(0, key, certificate) + ":interface=127.0.0.1"
        endpoint = serverFromString(reactor, description)
        port = await endpoint.listen(Factory.forProtocol(Silent))
        self.addCleanup(port.stopListening)
        return port.getHost().port, key, certificate, endpoint

    def test_tls12_and_tls13_accepted_and_verifiable(self) -> Deferred[None]:
        async def check() -> None:
            key_types: tuple[KeyType, ...] = ("rsa", "ecdsa")
            for key_type in key_types:
                port, _, certificate, _ = await self._serve(key_type)
                for version, name in (
                    (ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
                    (ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
                ):
                    agreed = await deferToThread(_handshake, port, version, version, str(certificate))
                    self.assertEqual(agreed, name)

        return Deferred.fromCoroutine(check())

    def test_tls11_refused(self) -> Deferred[None]:
        async def check() -> None:
            port, key, certificate, endpoint = await self._serve("rsa")
            # Twisted's CertificateOptions (what an ssl: endpoint without
            # sslmethod= builds) turns TLS 1.0 and 1.1 off itself (its
            # _defaultMinimumTLSVersion is TLSv1_2), whatever the system's
            # OpenSSL would allow.
            # (pyOpenSSL reads options only as the result of setting some.)
            options = endpoint._sslContextFactory.getContext().set_options(0)
            self.assertTrue(options & SSL.OP_NO_TLSv1)
            self.assertTrue(options & SSL.OP_NO_TLSv1_1)
            self.assertFalse(options & SSL.OP_NO_TLSv1_2)
            if not await deferToThread(_tls11_possible_here, certificate, key):
                raise SkipTest(
                    "this machine's OpenSSL cannot do TLS 1.1 even when allowed: "
                    "the refusal below would prove nothing (the options above are checked)"
                )
            with self.assertRaises(ssl.SSLError):
                await deferToThread(
                    _handshake, port, ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_1
                )
            # The listener is still serving after refusing one.
            agreed = await deferToThread(
                _handshake, port, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2
            )
            self.assertEqual(agreed, "TLSv1.2")

        return Deferred.fromCoroutine(check())
