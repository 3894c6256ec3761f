"""TLS of the cloud link, against a stub cloud over ``ssl:`` on 127.0.0.1
with certificates made here by trustme: the right CA and name work; a wrong
name, an unknown CA, or a missing client certificate fail the link."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trustme
from twisted.internet import reactor as global_reactor
from twisted.internet.ssl import Certificate, PrivateCertificate

from gateway.schema import ConfigError
from gateway.upstream.http import UpstreamClient, load_tls_policy
from gateway.upstream.link import FailureKind, LinkFailure, LinkState
from support.upstream import UpstreamTestCase, plate_event

pytestmark = pytest.mark.e2e

reactor: Any = global_reactor


class TlsTests(UpstreamTestCase):
    loopback = True  # real TLS handshakes

    def setUp(self) -> None:
        super().setUp()
        self.ca = trustme.CA()
        self.files = Path(self.mktemp())
        self.files.mkdir(parents=True)
        self.ca_file = self.files / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def serve(self, issuer: trustme.CA, name: str, client_ca: trustme.CA | None = None) -> str:
        server = issuer.issue_cert(name)
        private = PrivateCertificate.loadPEM(server.private_key_and_cert_chain_pem.bytes())
        if client_ca is None:
            options = private.options()
        else:
            # Mutual TLS: only clients with a certificate of client_ca get in.
            options = private.options(Certificate.loadPEM(client_ca.cert_pem.bytes()))
        port = reactor.listenSSL(0, self.cloud.site, options, interface="127.0.0.1")
        self.addCleanup(self.cloud.cut_connections)
        self.addCleanup(port.stopListening)
        return f"https://127.0.0.1:{port.getHost().port}"

    def client(self, url: str, **settings: Any) -> UpstreamClient:
        client = UpstreamClient(reactor, self.config(url=url, **settings), clock=self.clock)
        self.addCleanup(client.close)
        return client

    async def sync_status(self, client: UpstreamClient) -> int:
        response = await client.request("GET", "/sync", params={"gateway": "site-7"})
        return response.status

    async def assert_tls_fails(self, client: UpstreamClient) -> LinkFailure:
        with self.assertRaises(LinkFailure) as raised:
            await client.request("GET", "/sync")
        self.assertEqual(raised.exception.kind, FailureKind.CONNECTIVITY)
        return raised.exception

    async def test_right_ca_and_name_work(self) -> None:
        url = self.serve(self.ca, "127.0.0.1")
        client = self.client(url, ca_file=str(self.ca_file))
        self.assertEqual(await self.sync_status(client), 200)
        self.assertEqual(self.cloud.bad_signatures, [])

    async def test_wrong_name_fails(self) -> None:
        url = self.serve(self.ca, "cloud.example.org")
        failure = await self.assert_tls_fails(self.client(url, ca_file=str(self.ca_file)))
        self.assertIn("TLS failed: the cloud's certificate is not for", failure.reason)
        self.assertIn("127.0.0.1", failure.reason)
        self.assertEqual(self.cloud.requests, [])

    async def test_the_service_reports_a_failed_tls_link(self) -> None:
        url = self.serve(self.ca, "cloud.example.org")
        await self.commit([plate_event("cam-1", 1, self.clock)])
        service = await self.start_upstream(url=url, ca_file=str(self.ca_file))
        await self.until(lambda: service.link.state is LinkState.BACKING_OFF, "the failed link")
        self.assertIn("TLS failed", str(service.link.status.last_error))
        self.assertEqual((await service.status()).outbox_depth, 1)
        self.assertEqual(self.cloud.requests, [])

    async def test_unknown_ca_fails(self) -> None:
        url = self.serve(trustme.CA(), "127.0.0.1")
        failure = await self.assert_tls_fails(self.client(url, ca_file=str(self.ca_file)))
        self.assertIn("TLS failed", failure.reason)
        self.assertIn("certificate verify failed", failure.reason)
        # Nor does the system's trust store know a test CA.
        await self.assert_tls_fails(self.client(url))
        self.assertEqual(self.cloud.requests, [])

    async def test_mutual_tls_needs_the_client_certificate(self) -> None:
        client_ca = trustme.CA()
        url = self.serve(self.ca, "127.0.0.1", client_ca=client_ca)
        await self.assert_tls_fails(self.client(url, ca_file=str(self.ca_file)))

        issued = client_ca.issue_cert("gateway-site-7.example.org")
        cert_file = self.files / "client.pem"
        key_file = self.files / "client.key"
        cert_file.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(key_file))
        client = self.client(
            url, ca_file=str(self.ca_file), client_cert=str(cert_file), client_key=str(key_file)
        )
        self.assertEqual(await self.sync_status(client), 200)

    def test_unusable_files_name_the_setting(self) -> None:
        with self.assertRaises(ConfigError) as raised:
            self.config(ca_file=str(self.files / "nowhere.pem"))
        self.assertEqual(raised.exception.path, "ca_file")
        self.assertIn("no such file", str(raised.exception))

        not_pem = self.files / "empty.pem"
        not_pem.write_bytes(b"hello")
        with self.assertRaises(ConfigError) as raised:
            load_tls_policy(self.config(ca_file=str(not_pem)))
        self.assertIn("no PEM certificate", str(raised.exception))

        issued = self.ca.issue_cert("a.example.org")
        other = self.ca.issue_cert("b.example.org")
        cert_file = self.files / "a.pem"
        key_file = self.files / "b.key"
        issued.cert_chain_pems[0].write_to_path(str(cert_file))
        other.private_key_pem.write_to_path(str(key_file))
        with self.assertRaises(ConfigError) as raised:
            load_tls_policy(self.config(client_cert=str(cert_file), client_key=str(key_file)))
        self.assertEqual(raised.exception.path, "client_key")
