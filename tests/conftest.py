"""Fixtures shared by all tests live in tests/fixtures/; each module there owns one real part
(a Mosquitto broker, a tus server, recorded footage, ...). A module listed here that does
not exist fails the run: nothing is skipped silently."""

pytest_plugins = [
    "tests.fixtures.footage",
    "tests.fixtures.mosquitto",
    "tests.fixtures.brokers",
    "tests.fixtures.tus",
    "tests.fixtures.daemon",
]
