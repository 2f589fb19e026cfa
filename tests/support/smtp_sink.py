"""A real SMTP server on 127.0.0.1 for tests: keeps what it receives, refuses on request.

aiosmtpd's `Controller(port=0)` fails its own start-up check (it connects to the port it was
given), so a free port is found first and then passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    """One message as it arrived: the envelope and the parsed message."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes


def tls_server_context(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for 127.0.0.1 and the certificate file a client must trust."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


class TlsRefusingServer:
    """One-connection-at-a-time server whose TLS handshake clients refuse (an untrusted cert).

    aiosmtpd leaks the server side of a failed handshake (an unclosed transport); this plain
    socket server closes each connection itself. `starttls`: speaks SMTP up to STARTTLS first.
    """

    def __init__(self, context: ssl.SSLContext, *, starttls: bool) -> None:
        self.context, self.starttls = context, starttls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed by stop()
                return
            with conn:
                conn.settimeout(10)
                try:
                    if self.starttls:
                        reader = conn.makefile("rb")
                        conn.sendall(b"220 test ESMTP\r\n")
                        reader.readline()  # EHLO
                        conn.sendall(b"250-test\r\n250 STARTTLS\r\n")
                        reader.readline()  # STARTTLS
                        conn.sendall(b"220 ready\r\n")
                        reader.close()
                    with self.context.wrap_socket(conn, server_side=True):
                        pass
                except (OSError, ssl.SSLError):
                    pass

    def stop(self) -> None:
        """Stop accepting."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        self.thread.join(timeout=10)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Controller(Controller):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.protocols: list[Any] = []

    def factory(self) -> Any:
        # AUTH without TLS is what a local test server does; aiosmtpd warns about it.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            protocol = super().factory()
        self.protocols.append(protocol)
        return protocol

    def stop(self, *args: Any, **kwargs: Any) -> None:
        # aiosmtpd leaves the transports of connections whose TLS handshake failed open:
        # close every connection's transports in the server's loop before stopping it.
        async def close_all() -> None:
            for protocol in self.protocols:
                for transport in (protocol.transport, protocol._original_transport):
                    if transport is not None:
                        transport.abort()
            await asyncio.sleep(0.1)  # aborted transports close their sockets on the next turns

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(timeout=10)
        super().stop(*args, **kwargs)


@dataclass
class _Handler:
    sink: SmtpSink

    async def handle_RCPT(  # aiosmtpd's hook names
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self.sink.refuse.get(address.lower())
        if reply is not None:
            self.sink.refused.append(address.lower())
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        with self.sink.lock:
            self.sink.connections += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.sink.data_reply is not None:
            return self.sink.data_reply
        raw: bytes = envelope.original_content or envelope.content
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.sink.lock:
            self.sink.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), parsed, raw)
            )
        return "250 Message accepted for delivery"


@dataclass
class SmtpSink:
    """An aiosmtpd server; `refuse[address] = "550 ..."` refuses that recipient at RCPT.

    `data_reply` answers DATA with that reply instead of accepting; `auth` = (user, password)
    makes the server require AUTH; `starttls` (a server TLS context) makes it require
    STARTTLS, `implicit_tls` makes it speak TLS from the first byte (smtps).
    """

    auth: tuple[str, str] | None = None
    starttls: ssl.SSLContext | None = None
    implicit_tls: ssl.SSLContext | None = None
    refuse: dict[str, str] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    data_reply: str | None = None
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    # EHLOs seen: one per connection (clients send EHLO once per connection, or after TLS).
    connections: int = 0
    _controller: Controller | None = None

    def start(self, port: int | None = None) -> SmtpSink:
        """Listen on 127.0.0.1 (a free port, or `port`)."""
        self.port = port or free_port()
        options: dict[str, Any] = {}
        if self.auth is not None:
            options.update(
                authenticator=self._authenticate, auth_required=True, auth_require_tls=False
            )
        if self.starttls is not None:
            options.update(tls_context=self.starttls, require_starttls=True)
        if self.implicit_tls is not None:
            options.update(ssl_context=self.implicit_tls)
        self._controller = _Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, **options
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def restart(self) -> None:
        """Stop and listen again on the same port: every client connection is dropped."""
        self.stop()
        self.start(self.port)

    @property
    def url(self) -> str:
        """The SMTP_URL of this server (with the credentials when it requires AUTH)."""
        credentials = f"{self.auth[0]}:{self.auth[1]}@" if self.auth else ""
        scheme = "smtps" if self.implicit_tls else "smtp"
        query = "?starttls=1" if self.starttls else ""
        return f"{scheme}://{credentials}127.0.0.1:{self.port}{query}"

    def received(self) -> list[Received]:
        """A copy of what arrived so far."""
        with self.lock:
            return list(self.messages)

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.auth is not None
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == self.auth[0]
            and data.password.decode() == self.auth[1]
        )
        return AuthResult(success=ok, handled=False)
