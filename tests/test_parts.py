"""The profile's stopwatches (benchmarks/parts.py): every part's entry points exist, and a part's time is its own."""

from benchmarks import parts


def test_every_entry_point_of_the_profile_exists():
    for part, entry_points in parts.PARTS.items():
        for owner, name in entry_points:
            assert callable(getattr(owner, name, None)), f"{part}: {owner.__name__}.{name} is gone"


def test_a_part_counts_what_its_calls_take_and_the_rest_is_other(monkeypatch):
    ticks = iter(range(100))
    owner, name = parts.PARTS["rules"][0]
    monkeypatch.setattr(owner, name, lambda: None)

    def run():
        getattr(owner, name)()  # one call: two ticks of the clock, before and after it

    counted = parts.time_parts(run, clock=lambda: next(ticks))
    assert counted["rules"] == 1 and counted["total"] == 3 and counted["other"] == 2
    assert getattr(owner, name)() is None  # the stopwatch is taken off again
