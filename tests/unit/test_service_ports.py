"""Dynamic ports: every port a service needs is picked together, distinct, and never one handed out before."""

from __future__ import annotations

import socket

import pytest

from services import ServiceError
from services._process import LOCALHOST, free_ports, port_open
from services.kafka import SecureKafkaBroker


def test_ports_picked_together_are_distinct_and_free():
    ports = free_ports(64)
    assert len(set(ports)) == 64
    assert not any(port_open(port) for port in ports)


def test_a_port_handed_out_is_not_handed_out_again_before_its_server_binds_it():
    first = set(free_ports(32))
    # Nothing listens on them yet (the server is still starting): they look free, yet are never picked again.
    assert first.isdisjoint(free_ports(32))


def test_ports_to_avoid_are_avoided():
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        bound = sock.getsockname()[1]
    # `bound` is free again; asked to avoid it, the picker never returns it.
    for _ in range(50):
        assert bound not in free_ports(4, avoid={bound})


def test_a_service_gets_all_its_ports_distinct(tmp_path):
    # Four listeners (PLAINTEXT, CONTROLLER, SSL, SASL_SSL), one port given: what LocalService.start picks.
    for _ in range(200):
        broker = SecureKafkaBroker(
            keystore=tmp_path / "k.pem", truststore=tmp_path / "t.pem", scram_users={}, ports={"broker": 19192}
        )
        ports = broker.pick_ports()
        assert set(ports) == set(broker.port_names) and ports["broker"] == 19192
        assert len(set(ports.values())) == len(broker.port_names)


def test_given_ports_that_collide_are_refused(tmp_path):
    broker = SecureKafkaBroker(
        keystore=tmp_path / "k.pem", truststore=tmp_path / "t.pem", scram_users={}, ports={"broker": 1, "ssl": 1}
    )
    with pytest.raises(ServiceError, match="two of its ports are the same"):
        broker.pick_ports()
