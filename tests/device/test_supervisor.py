"""The restart budget, and a supervisor that restarts a failing part then gives up."""

import threading

from device.supervisor import RestartBudget, Supervisor


def test_budget_allows_within_window_and_forgets_old_failures() -> None:
    budget = RestartBudget(max_restarts=2, window_s=10)
    assert budget.allow(0) and budget.allow(1)
    assert not budget.allow(2)
    assert budget.allow(100)  # the old failures left the window


def test_failing_part_is_restarted_then_the_daemon_stops() -> None:
    stop = threading.Event()
    runs: list[int] = []

    def flaky() -> None:
        runs.append(1)
        raise RuntimeError("camera gone")

    supervisor = Supervisor(stop, max_restarts=3, window_s=60, backoff_s=0.01)
    supervisor.start("camera", flaky)
    assert stop.wait(5)
    assert supervisor.join(5) == []
    assert len(runs) == 4 and supervisor.failed_part == "camera"


def test_part_that_recovers_keeps_running_until_stop() -> None:
    stop = threading.Event()
    attempts: list[int] = []

    def recovers() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("transient")
        stop.wait()

    supervisor = Supervisor(stop, max_restarts=5, backoff_s=0.01)
    supervisor.start("mqtt", recovers)
    assert not stop.wait(0.3)
    stop.set()
    assert supervisor.join(5) == []
    assert len(attempts) == 3 and supervisor.failed_part is None


def test_a_part_outside_the_threads_can_fail_the_daemon() -> None:
    stop = threading.Event()
    supervisor = Supervisor(stop)
    supervisor.fail("recorder")
    assert stop.is_set() and supervisor.failed_part == "recorder"
