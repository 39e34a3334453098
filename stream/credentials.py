"""The worker's broker authentication, from the same settings every other Kafka client reads."""

from __future__ import annotations

import ssl

import faust

from models.settings import BrokerSettings


def _ssl_context(b: BrokerSettings) -> ssl.SSLContext:
    cafile = str(b.kafka_ssl_ca_file) if b.kafka_ssl_ca_file is not None else None
    return ssl.create_default_context(cafile=cafile)


def faust_credentials(b: BrokerSettings) -> faust.auth.Credentials | None:
    """What faust.App(broker_credentials=...) takes for the configured security protocol;
    None for PLAINTEXT."""
    protocol = b.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(_ssl_context(b))
    assert b.kafka_sasl_password is not None  # BrokerSettings refuses SASL without it
    return faust.SASLCredentials(
        username=b.kafka_sasl_username,
        password=b.kafka_sasl_password.get_secret_value(),
        mechanism=b.kafka_sasl_mechanism,
        ssl_context=_ssl_context(b) if protocol == "SASL_SSL" else None,
    )
