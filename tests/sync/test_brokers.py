"""Which broker and MQTT version the next attempt uses (sync.brokers), as pure decisions."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from sync.brokers import Attempt, BrokerRotation, visiting_order
from sync.settings import AUTO, MQTT5, MQTT311, BrokerEndpoint


def nodes(n: int) -> list[BrokerEndpoint]:
    return [BrokerEndpoint(f"mqtt://node{i}:1883", f"node{i}", 1883, False) for i in range(n)]


@given(st.integers(1, 8), st.text(min_size=1, max_size=64), st.sampled_from(list(Attempt)))
def test_failures_visit_every_broker_once_a_round(n: int, device_id: str, how: Attempt) -> None:
    rotation = BrokerRotation(nodes(n), MQTT5, device_id)
    seen = [rotation.target().endpoint.host]
    for _ in range(n - 1):
        if how is Attempt.CONNECTED and n == 1:
            break
        seen.append(rotation.report(how).endpoint.host)
    assert sorted(seen) == sorted({e.host for e in nodes(n)}) or n == 1
    assert all(rotation.target().protocol == MQTT5 for _ in range(2))


def test_a_fleet_spreads_over_the_nodes_and_a_dead_node_s_devices_spread_too() -> None:
    firsts = Counter(visiting_order(3, f"cam-{i}")[0] for i in range(3000))
    assert min(firsts.values()) > 800  # about 1000 each
    # the devices that started on node 0 move to node 1 and node 2 alike
    seconds = Counter(
        visiting_order(3, f"cam-{i}")[1]
        for i in range(3000)
        if visiting_order(3, f"cam-{i}")[0] == 0
    )
    assert set(seconds) == {1, 2} and min(seconds.values()) > 350
    assert visiting_order(3, "cam-1") == visiting_order(3, "cam-1")  # stable across restarts


def test_auto_falls_back_to_3_1_1_at_once_and_keeps_it_once_it_connected() -> None:
    rotation = BrokerRotation(nodes(2), AUTO, "cam")
    first = rotation.target()
    assert first.protocol == MQTT5 and not first.at_once
    again = rotation.report(Attempt.VERSION_REFUSED)
    assert again.endpoint == first.endpoint and again.protocol == MQTT311 and again.at_once
    other = rotation.report(Attempt.CONNECTED)  # connected with 3.1.1, later lost
    assert other.endpoint != first.endpoint and other.protocol == MQTT5
    back = rotation.report(Attempt.UNREACHABLE)
    assert back.endpoint == first.endpoint and back.protocol == MQTT311 and not back.at_once


def test_a_close_before_connack_is_tried_with_3_1_1_but_not_kept_unless_it_connects() -> None:
    rotation = BrokerRotation(nodes(1), AUTO, "cam")
    assert rotation.report(Attempt.CLOSED_BEFORE_CONNACK).protocol == MQTT311
    # 3.1.1 fails too: the network's fault, perhaps; 5 again next time, after a backoff
    after = rotation.report(Attempt.CLOSED_BEFORE_CONNACK)
    assert after.protocol == MQTT5 and not after.at_once


def test_a_fixed_version_is_never_changed() -> None:
    for version in (MQTT5, MQTT311):
        rotation = BrokerRotation(nodes(2), version, "cam")
        for how in Attempt:
            target = rotation.report(how)
            assert target.protocol == version and not target.at_once


def test_a_refusal_that_is_not_about_the_version_moves_on() -> None:
    rotation = BrokerRotation(nodes(2), AUTO, "cam")
    first = rotation.target()
    nxt = rotation.report(Attempt.REFUSED)  # not authorized: 3.1.1 would not help
    assert nxt.endpoint != first.endpoint and nxt.protocol == MQTT5
