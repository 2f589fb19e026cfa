"""A local stand-in for Amazon SNS: signs messages as SNS does, serves its certificate.

The key and certificate are made here with `cryptography`; an HTTP server on 127.0.0.1 serves
the certificate (`SigningCertURL`) and records visits to SubscribeURL.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from app.services.sns import string_to_sign

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"


def make_certificate() -> tuple[rsa.RSAPrivateKey, bytes]:
    """An RSA key and a self-signed certificate for it (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.eu-west-1.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


class SnsPeer:
    """Serves its certificate at `cert_path`; `/confirm?...` visits are kept in `confirmed`."""

    def __init__(self) -> None:
        self.key, self.pem = make_certificate()
        self.confirmed: list[str] = []
        self.cert_fetches = 0
        # Unique per peer: verified certificates are cached by URL, and ports get reused.
        self.cert_path = f"/cert-{uuid.uuid4().hex}.pem"
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == peer.cert_path:
                    peer.cert_fetches += 1
                    body = peer.pem
                elif self.path.startswith("/confirm"):
                    peer.confirmed.append(self.path)
                    body = b"<ConfirmSubscriptionResponse/>"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def sign(
        self, message: dict[str, Any], version: str = "1", cert_url: str | None = None
    ) -> dict[str, Any]:
        """The message with SignatureVersion, Signature and SigningCertURL, as SNS sends it."""
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(string_to_sign(message), padding.PKCS1v15(), algorithm)
        return {
            **message,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": cert_url or self.url + self.cert_path,
        }

    def notification(self, payload: dict[str, Any], version: str = "1") -> dict[str, Any]:
        """A signed Notification carrying `payload` (an SES notification) as its Message."""
        return self.sign(
            {
                "Type": "Notification",
                "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
                "TopicArn": TOPIC,
                "Subject": "Amazon SES Email Event Notification",
                "Message": json.dumps(payload),
                "Timestamp": "2026-12-01T12:00:00.000Z",
            },
            version,
        )

    def subscription_confirmation(self) -> dict[str, Any]:
        """A signed SubscriptionConfirmation whose SubscribeURL points at this peer."""
        return self.sign(
            {
                "Type": "SubscriptionConfirmation",
                "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
                "Token": "2336412f37fb687f5d51e6e2425",
                "TopicArn": TOPIC,
                "Message": "You have chosen to subscribe to the topic.",
                "SubscribeURL": f"{self.url}/confirm?Action=ConfirmSubscription&Token=2336",
                "Timestamp": "2026-12-01T12:00:00.000Z",
            }
        )
