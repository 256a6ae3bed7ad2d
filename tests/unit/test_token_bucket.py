"""The scheduler's catch-up bound: at most `rate` steps a second, bursts of one second's worth."""

from services.scheduler.handlers import TokenBucket


def test_a_catch_up_is_spread_at_the_configured_rate():
    clock = [0.0]
    bucket = TokenBucket(100, now=lambda: clock[0])
    assert bucket.take(500) == 100  # one second's worth at once, not the whole backlog
    assert bucket.take(500) == 0
    clock[0] += 0.5
    assert bucket.take(500) == 50
    clock[0] += 10  # idle time does not pile up more than one second's worth
    assert bucket.take(500) == 100


def test_unused_tokens_are_given_back():
    clock = [0.0]
    bucket = TokenBucket(100, now=lambda: clock[0])
    granted = bucket.take(80)
    bucket.give_back(granted - 30)  # only 30 were due
    assert bucket.take(500) == 70
