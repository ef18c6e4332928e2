"""`integ.clocks`: which program's wall clock is set off the machine's, and by what environment."""

from pathlib import Path

import pytest

from integ.clocks import Clocks, offset_env

LIBRARY = Path("/run/e2e/libfaketime.so.1")


def test_an_offset_is_libfaketime_preloaded_with_the_monotonic_clock_left_alone() -> None:
    assert offset_env(-42.5, LIBRARY) == {
        "LD_PRELOAD": str(LIBRARY),
        "FAKETIME": "-42.500s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    assert offset_env(0.0, LIBRARY) == {}


def test_agents_by_node_and_replicas_by_start_in_turn() -> None:
    clocks = Clocks(
        nodes=(("e2e-1", 30.0),), controllers=(2.0, -3.0), apiservers=(0.0, 60.0), library=LIBRARY
    )
    assert clocks.skewed
    assert clocks.agent("e2e-1")["FAKETIME"] == "+30.000s"
    assert clocks.agent("e2e-0") == {}
    assert [clocks.controller(n).get("FAKETIME") for n in range(3)] == ["+2.000s", "-3.000s", "+2.000s"]
    assert [clocks.apiserver(n).get("FAKETIME") for n in range(2)] == [None, "+60.000s"]
    assert clocks.controller_offset(3) == -3.0
    assert clocks.describe() == "e2e-1 +30s, controller-0 +2.0s, controller-1 -3.0s, apiserver-1 +60s"


def test_no_offset_needs_no_library_and_an_offset_without_one_is_an_error() -> None:
    assert not Clocks().skewed
    assert Clocks().agent("e2e-0") == {}
    assert Clocks().controller(0) == {}
    with pytest.raises(RuntimeError, match="libfaketime"):
        Clocks(nodes=(("e2e-0", 5.0),)).agent("e2e-0")
