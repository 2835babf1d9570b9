"""Kafka settings never show their secret."""

from __future__ import annotations

from microservice_connector.messaging.kafka.connection import KafkaConfig


def test_the_sasl_password_stays_out_of_the_repr_but_reaches_the_client() -> None:
    config = KafkaConfig(
        "127.0.0.1:9092",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="billing",
        sasl_password="s3cret-pw",
    )

    assert "s3cret-pw" not in repr(config)
    assert "s3cret-pw" not in str(config)
    assert "billing" in repr(config)
    assert config.client_options()["sasl_plain_password"] == "s3cret-pw"
