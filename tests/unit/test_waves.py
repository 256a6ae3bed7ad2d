"""A batch handler's run split into waves (`sequences.messaging.consumer.waves`)."""

from types import SimpleNamespace

from sequences.messaging.consumer import waves


def _run(*streams: str) -> list:
    return [SimpleNamespace(stream_id=stream, n=n) for n, stream in enumerate(streams)]


def test_each_stream_is_in_a_wave_once_and_its_later_events_in_the_next_ones_in_order():
    run = _run("a", "b", "a", "c", "a", "b")
    assert [[(e.stream_id, e.n) for e in wave] for wave in waves(run)] == [
        [("a", 0), ("b", 1), ("c", 3)], [("a", 2), ("b", 5)], [("a", 4)]]


def test_a_run_of_different_streams_is_one_wave_and_an_empty_run_none():
    run = _run("a", "b", "c")
    assert waves(run) == [run]
    assert waves([]) == []


def test_the_key_may_be_other_than_the_stream():
    run = _run("a", "b", "c")
    assert [[e.n for e in wave] for wave in waves(run, key=lambda e: e.n % 2)] == [[0, 1], [2]]
