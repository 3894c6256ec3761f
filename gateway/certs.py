"""``anpr-gateway-make-cert``: a self-signed TLS certificate for the site.

Cameras that push over HTTPS, and the staff's browsers on the admin page, need
the gateway to present a certificate. A site box on a private network has no
public name for a public CA to certify, so the gateway makes its own: one
self-signed certificate whose subjectAltName lists the host names and IP
addresses cameras and browsers use to reach it. Cameras in "anonymous" mode
accept it as it is; cameras in "CA certificate" mode are given the certificate
file itself as their CA.

RSA 2048 is the default key: every TLS client supports it, including old
camera firmware. ECDSA P-256 is smaller and cheaper for the gateway to serve;
the camera vendors do not document which key types their firmware accepts, so
use it only after a push test with each camera model.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import pwd
import re
import secrets
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet.endpoints import quoteStringArgument

__all__ = [
    "CertificateError",
    "KeyType",
    "SiteCertificate",
    "endpoint_string",
    "main",
    "make_certificate",
    "write_certificate",
]

KeyType = Literal["rsa", "ecdsa"]

#: Default and accepted validity, in years.
DEFAULT_YEARS: Final = 10
MAX_YEARS: Final = 30

# Clients that keep time in a signed 32-bit counter cannot represent dates after
# this instant; an expiry beyond it may be misread by old embedded firmware.
_CLOCK_LIMIT_32BIT: Final = datetime.datetime(2038, 1, 19, 3, 14, 7, tzinfo=datetime.timezone.utc)

# A camera or PC whose clock is a little behind must not see a certificate
# that is "not yet valid".
_BACKDATE: Final = datetime.timedelta(days=1)

_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class CertificateError(Exception):
    """A certificate cannot be made or written as asked; the message says why."""


@attrs.frozen
class SiteCertificate:
    """A certificate and its private key, PEM encoded."""

    certificate_pem: bytes
    private_key_pem: bytes
    #: SHA-256 fingerprint, colon-separated hex: to compare with what a browser shows.
    fingerprint_sha256: str
    not_valid_after: datetime.datetime
    names: tuple[str, ...]


def _subject_alternative_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    host = name.rstrip(".")
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in host.split(".")):
        raise CertificateError(
            f"{name!r} is neither an IP address nor a host name "
            "(letters, digits, hyphens and dots)"
        )
    return x509.DNSName(host.lower())


def make_certificate(
    names: Sequence[str],
    key_type: KeyType = "rsa",
    years: int = DEFAULT_YEARS,
    now: datetime.datetime | None = None,
) -> SiteCertificate:
    """A new self-signed server certificate for ``names`` (host names and IP
    addresses, the first one also the subject's common name, which old clients
    match instead of the subjectAltName)."""
    if not names:
        raise CertificateError(
            "name at least one host name or IP address that cameras use to reach the gateway"
        )
    if not 1 <= years <= MAX_YEARS:
        raise CertificateError(f"validity must be 1 to {MAX_YEARS} years, got {years}")
    alternative_names = [_subject_alternative_name(name) for name in names]
    now = now or datetime.datetime.now(datetime.timezone.utc)
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if key_type == "rsa":
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif key_type == "ecdsa":
        private_key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise CertificateError(f"key type must be rsa or ecdsa, got {key_type!r}")
    common_name = next((str(n) for n in names if len(n) <= 64), "anpr-gateway")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "anpr-gateway"),
        ]
    )
    public_key = private_key.public_key()
    try:
        not_valid_after = now.replace(year=now.year + years)
    except ValueError:  # 29 February, and the final year is not a leap year
        not_valid_after = now.replace(year=now.year + years, day=28)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        # Positive, at most 20 octets (RFC 5280), unpredictable.
        .serial_number(secrets.randbits(159) | 1)
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_valid_after)
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        # Self-signed: the certificate is its own CA, which is what a camera
        # in "CA certificate" mode is given to trust. pathlen 0: it can sign
        # nothing but itself.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                # RSA key exchange (TLS 1.2 without forward secrecy), still
                # used by some embedded clients.
                key_encipherment=key_type == "rsa",
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
    )
    certificate = builder.sign(private_key, hashes.SHA256())
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex(":").upper()
    return SiteCertificate(
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
        private_key_pem=private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        fingerprint_sha256=fingerprint,
        not_valid_after=not_valid_after,
        names=tuple(names),
    )


def _write_file(
    path: Path, data: bytes, mode: int, owner: tuple[int, int] | None, force: bool
) -> None:
    # Written whole under a temporary name with its final mode from the first
    # byte (the key is never readable by others, even for an instant), then
    # put in place: linked (fails if the name exists) or, with force, renamed
    # over the old file.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(descriptor, mode)
        if owner is not None:
            os.fchown(descriptor, *owner)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if force:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
    except FileExistsError:
        raise CertificateError(f"{path} exists; use --force to replace it") from None
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def write_certificate(
    site: SiteCertificate,
    key_path: Path,
    certificate_path: Path,
    force: bool = False,
    owner: tuple[int, int] | None = None,
) -> None:
    """Write the key (mode 0600, owned by ``owner`` (uid, gid) if given) and the
    certificate (mode 0644). Without ``force``, refuse if either file exists,
    before writing anything."""
    if not force:
        existing = [str(p) for p in (key_path, certificate_path) if os.path.lexists(p)]
        if existing:
            raise CertificateError(f"{' and '.join(existing)} exist(s); use --force to replace")
    for path in (key_path, certificate_path):
        if not path.parent.is_dir():
            raise CertificateError(f"{path.parent} is not a directory")
    try:
        _write_file(key_path, site.private_key_pem, 0o600, owner, force)
        _write_file(certificate_path, site.certificate_pem, 0o644, None, force)
    except PermissionError as error:
        raise CertificateError(f"cannot write {error.filename}: permission denied") from None


def endpoint_string(port: int, key_path: Path, certificate_path: Path) -> str:
    """The Twisted ``ssl:`` server endpoint serving this certificate on ``port``.

    No ``sslmethod=``: Twisted then negotiates TLS 1.2 or newer only. Naming a
    method would replace that minimum with the method's own.
    """
    return (
        f"ssl:{port}:privateKey={quoteStringArgument(str(key_path))}"
        f":certKey={quoteStringArgument(str(certificate_path))}"
    )


def _default_owner() -> str | None:
    # The service reads the key as its own user; when root makes the key for
    # an installed gateway, it is that user's.
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("anpr-gateway")
    except KeyError:
        return None
    return "anpr-gateway"


def main(argv: Sequence[str] | None = None) -> int:
    """``anpr-gateway-make-cert NAME_OR_ADDRESS...``: exit status 0 when the
    files were written, 1 when not (the reason on standard error)."""
    parser = argparse.ArgumentParser(
        prog="anpr-gateway-make-cert",
        description=(
            "Make a self-signed TLS certificate and key for the gateway's ssl: listeners "
            "(cameras pushing over HTTPS, the admin page)."
        ),
    )
    parser.add_argument(
        "names",
        nargs="+",
        metavar="NAME_OR_ADDRESS",
        help="host names and IP addresses cameras and browsers use to reach the gateway",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path("/etc/anpr-gateway"),
        help="where to write NAME.key and NAME.crt (default: /etc/anpr-gateway)",
    )
    parser.add_argument("--name", default="site", help="file name stem (default: site)")
    parser.add_argument(
        "--key-type",
        choices=("rsa", "ecdsa"),
        default="rsa",
        help="rsa (2048 bits, accepted by every camera) or ecdsa (P-256); default rsa",
    )
    parser.add_argument(
        "--years",
        type=int,
        default=DEFAULT_YEARS,
        help=f"validity in years, 1 to {MAX_YEARS} (default {DEFAULT_YEARS})",
    )
    parser.add_argument(
        "--port", type=int, default=443, help="port for the printed endpoint (default 443)"
    )
    parser.add_argument(
        "--owner",
        default=_default_owner(),
        help="user to own the key file (default: anpr-gateway when run as root and that "
        "user exists, else the current user)",
    )
    parser.add_argument("--force", action="store_true", help="replace existing files")
    arguments = parser.parse_args(argv)

    owner: tuple[int, int] | None = None
    if arguments.owner:
        try:
            entry = pwd.getpwnam(arguments.owner)
        except KeyError:
            print(f"error: no user {arguments.owner!r}", file=sys.stderr)
            return 1
        owner = (entry.pw_uid, entry.pw_gid)
    directory: Path = arguments.dir.absolute()
    key_path = directory / f"{arguments.name}.key"
    certificate_path = directory / f"{arguments.name}.crt"
    try:
        site = make_certificate(arguments.names, arguments.key_type, arguments.years)
        write_certificate(site, key_path, certificate_path, arguments.force, owner)
    except CertificateError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    key_owner = arguments.owner or pwd.getpwuid(os.geteuid()).pw_name
    print(f"key:          {key_path} (mode 0600, owner {key_owner})")
    print(f"certificate:  {certificate_path}")
    print(f"names:        {', '.join(site.names)}")
    print(f"valid until:  {site.not_valid_after:%Y-%m-%d}")
    print(f"SHA-256:      {site.fingerprint_sha256}")
    if site.not_valid_after > _CLOCK_LIMIT_32BIT:
        print(
            "warning: the certificate expires after 2038-01-19, which cameras keeping time "
            "in 32 bits may misread; fewer --years avoids it",
            file=sys.stderr,
        )
    endpoint = endpoint_string(arguments.port, key_path, certificate_path)
    print()
    print("Add this listener to [camera_server] listen (or [admin] listen) in gateway.toml:")
    # A TOML basic string: backslashes (escaped colons) doubled.
    print('    "' + endpoint.replace("\\", "\\\\").replace('"', '\\"') + '"')
    print(
        f"Cameras in \"CA certificate\" mode must be given {certificate_path} as their CA "
        "certificate."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
