"""Broker authentication: one set of settings, the same for librdkafka clients and the worker."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
from pydantic import ValidationError

from models.settings import BrokerSettings
from stream.credentials import faust_credentials


def test_plaintext_is_the_default_and_adds_nothing_to_faust() -> None:
    b = BrokerSettings()
    assert b.client_security() == {"security.protocol": "plaintext"}
    assert faust_credentials(b) is None


def test_sasl_over_tls_reaches_both_kinds_of_client(monkeypatch: pytest.MonkeyPatch) -> None:
    ca = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("LOOKALIKE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("LOOKALIKE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("LOOKALIKE_KAFKA_SASL_USERNAME", "indexer")
    monkeypatch.setenv("LOOKALIKE_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("LOOKALIKE_KAFKA_SSL_CA_FILE", str(ca))
    b = BrokerSettings()
    assert b.client_security() == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "indexer",
        "sasl.password": "s3cret",
        "ssl.ca.location": str(ca),
    }
    # The password never shows in a repr or a log line of the settings.
    assert "s3cret" not in repr(b)
    credentials = faust_credentials(b)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "indexer" and credentials.password == "s3cret"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.protocol.value == "SASL_SSL"
    assert isinstance(credentials.ssl_context, ssl.SSLContext)


def test_tls_alone_gives_the_worker_an_ssl_context() -> None:
    b = BrokerSettings(kafka_security_protocol="SSL")
    assert b.client_security() == {"security.protocol": "ssl"}
    assert isinstance(faust_credentials(b), faust.SSLCredentials)


def test_sasl_without_credentials_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="LOOKALIKE_KAFKA_SASL_USERNAME"):
        BrokerSettings(kafka_security_protocol="SASL_PLAINTEXT")
