"""The stub cloud's own checks (tests/support/cloud.py) against the published
Standard Webhooks example, so the other upstream tests can trust it."""

from __future__ import annotations

import base64

from twisted.trial.unittest import TestCase

from support.cloud import expected_signature, signature_valid


class StubCloudSelfTests(TestCase):
    """The stub's checks agree with the published example and catch tampering."""

    # The example of the Standard Webhooks specification.
    KEY = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
    TIMESTAMP = "1614265330"
    BODY = b'{"test": 2432232314}'
    SIGNATURE = "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

    def headers(self, **changes: str) -> dict[str, str | None]:
        values: dict[str, str | None] = {
            "webhook-id": self.MSG_ID,
            "webhook-timestamp": self.TIMESTAMP,
            "webhook-signature": f"v1,{self.SIGNATURE}",
        }
        values.update(changes)
        return values

    def test_published_example_verifies(self) -> None:
        self.assertEqual(
            expected_signature(self.KEY, self.MSG_ID, self.TIMESTAMP, self.BODY), self.SIGNATURE
        )
        now = float(self.TIMESTAMP)
        self.assertIsNone(signature_valid(self.KEY, self.headers(), self.BODY, now))
        rotated = self.headers(**{"webhook-signature": f"v1,bm90IGl0 v1,{self.SIGNATURE}"})
        self.assertIsNone(signature_valid(self.KEY, rotated, self.BODY, now))

    def test_tampering_and_replay_are_caught(self) -> None:
        now = float(self.TIMESTAMP)
        self.assertIsNotNone(signature_valid(self.KEY, self.headers(), self.BODY + b" ", now))
        self.assertIsNotNone(
            signature_valid(self.KEY, self.headers(**{"webhook-id": "msg_other"}), self.BODY, now)
        )
        self.assertIsNotNone(signature_valid(self.KEY, self.headers(), self.BODY, now + 301))
        self.assertIsNotNone(signature_valid(b"another key", self.headers(), self.BODY, now))
