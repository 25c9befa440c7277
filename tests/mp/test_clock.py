# kiosk.clock: the kiosk follows the host's time from its acks, forward at
# once, backward only when acks agree for a while, never on one late ack.
import time
from kiosk import clock


class Log:
    def __init__(self):
        self.steps = []

    def __call__(self, kind, fields):
        self.steps.append(fields["step_s"])


def test_the_first_ack_sets_the_clock_either_way():
    log = Log()
    assert not clock.synced()
    base = clock.now()
    assert clock.adjust(base - 3600, log) <= -3598
    assert clock.synced() and abs(clock.now() - (base - 3600)) <= 2
    assert len(log.steps) == 1


def test_one_late_ack_never_steps_the_clock_back():
    log = Log()
    clock.adjust(clock.now(), log)           # synced
    clock.BACK_WINDOW_MS = 300
    base = clock.now()
    # An ack that waited 8 s in a queue: the host seems 8 s behind.
    assert clock.adjust(base - 8, log) == 0
    assert abs(clock.now() - base) <= 1
    # An ack in time: the kiosk is not ahead; the late one is forgotten.
    assert clock.adjust(clock.now(), log) == 0
    # Late acks with one in time between them never add up.
    for _ in range(4):
        assert clock.adjust(clock.now() - 8, log) == 0
        time.sleep_ms(200)
        assert clock.adjust(clock.now() - 8, log) == 0
        assert clock.adjust(clock.now(), log) == 0
    assert log.steps == []
    # Nor do late acks that come in a burst (less than the window).
    clock.BACK_WINDOW_MS = 20000
    for _ in range(10):
        assert clock.adjust(clock.now() - 8, log) == 0
    assert log.steps == [] and abs(clock.now() - base) <= 2
    # Forward steps are taken at once: a late ack can only understate.
    assert clock.adjust(clock.now() + 30, log) >= 28


def test_acks_that_agree_for_a_while_step_the_clock_back_by_the_least():
    log = Log()
    clock.adjust(clock.now(), log)
    clock.BACK_WINDOW_MS = 300
    base = clock.now()
    leads = [-50, -42, -45]
    for i, d in enumerate(leads):
        r = clock.adjust(clock.now() + d, log)
        if i < len(leads) - 1:
            assert r == 0
            time.sleep_ms(200)
    assert log.steps and -43 <= log.steps[-1] <= -41, log.steps
    assert abs(clock.now() - (base - 42)) <= 2
