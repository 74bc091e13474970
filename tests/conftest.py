"""Fixtures shared by all tests live in tests/fixtures/; each module there owns one real part
(a Mosquitto broker, a tus server, recorded footage, ...)."""

import importlib.util

pytest_plugins = [
    name
    for name in (
        "tests.fixtures.common",
        "tests.fixtures.footage",
        "tests.fixtures.mosquitto",
        "tests.fixtures.tus",
        "tests.fixtures.daemon",
    )
    if importlib.util.find_spec(name) is not None
]
