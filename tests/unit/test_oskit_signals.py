"""oskit's signal names and numbers, and how a wait status becomes an ExitStatus.

Signal names arrive from clients (``"TERM"``, ``"SIGUSR1"``, ``15``, ``"15"``) and go
back out in records (``exit_signal``); both directions are pure functions of the
platform's signal table. Wait statuses are checked twice: as the kernel encodes them
(``code << 8``, ``signal | 0x80`` for a core dump), and from real children waited for
by pid (never ``waitpid(-1)``: that would reap other tests' children).
"""

from __future__ import annotations

import signal

import pytest

from daemon.oskit import ExitStatus, signal_name, signal_number, valid_signals


@pytest.mark.parametrize(("given", "number"), [
    (15, 15), ("15", 15), ("TERM", 15), ("SIGTERM", 15),
    ("USR1", signal.SIGUSR1), ("SIGKILL", 9), ("9", 9), (64, 64),
    ("SIGRTMIN", signal.SIGRTMIN), ("RTMAX", signal.SIGRTMAX),
    ("IOT", signal.SIGABRT), ("SIGCLD", signal.SIGCHLD),   # aliases Python's table knows
])
def test_signal_number_accepts_numbers_and_names_with_or_without_sig(given: str | int,
                                                                     number: int) -> None:
    assert signal_number(given) == number


@pytest.mark.parametrize(("given", "message"), [
    (0, "not a valid signal number"),          # "does it exist" probes are not signals
    (65, "not a valid signal number"),
    (-15, "not a valid signal number"),
    (32, "not a valid signal number"),         # kept by glibc for its threads
    ("sigterm", "not a known signal name"),    # names are in capitals
    ("term", "not a known signal name"),
    ("015", "not a known signal name"),        # a leading zero is not a number here
    ("0", "not a known signal name"),
    (" 15", "not a known signal name"),
    ("1e1", "not a known signal name"),
    ("\u0665", "not a known signal name"),     # ARABIC-INDIC DIGIT FIVE: isdigit(), not ASCII
    ("", "not a known signal name"),
    ("SIG", "not a known signal name"),
    ("SIG40", "not a known signal name"),      # what signal_name(40) prints: see below
    (True, "not a signal"),
    (15.0, "a signal is a name or a number"),
    (None, "a signal is a name or a number"),
])
def test_signal_number_refuses_anything_else_with_a_reason(given: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        signal_number(given)  # type: ignore[arg-type]


def test_valid_signals_are_the_platforms_deliverable_ones() -> None:
    valid = valid_signals()
    assert {signal.SIGHUP, signal.SIGINT, signal.SIGKILL, signal.SIGTERM, signal.SIGUSR1,
            signal.SIGRTMIN, signal.SIGRTMAX} <= valid
    assert 0 not in valid and all(0 < number < signal.NSIG for number in valid)
    # Every valid number is accepted as a number and as its decimal string.
    for number in valid:
        assert signal_number(number) == number == signal_number(str(number))


@pytest.mark.parametrize(("number", "name"), [
    (1, "SIGHUP"), (2, "SIGINT"), (9, "SIGKILL"), (15, "SIGTERM"), (17, "SIGCHLD"),
    (6, "SIGABRT"),                  # not its alias SIGIOT
    (signal.SIGRTMIN, "SIGRTMIN"), (signal.SIGRTMAX, "SIGRTMAX"),
    (signal.SIGRTMIN + 6, f"SIG{signal.SIGRTMIN + 6}"),  # unnamed real-time signals
    (0, "SIG0"), (99, "SIG99"),      # never raises: a record always gets a name
])
def test_signal_name(number: int, name: str) -> None:
    assert signal_name(number) == name


def test_every_named_signal_reads_back_to_its_number() -> None:
    """What a record says (``exit_signal``) can be sent back as a signal, where Python has a
    name for it. The unnamed real-time signals print as ``SIG<n>``, which only their number
    reads back from."""
    for number in valid_signals():
        name = signal_name(number)
        if name == f"SIG{number}":
            assert signal_number(number) == number
        else:
            assert signal_number(name) == number
            assert signal_number(name.removeprefix("SIG")) == number


# --- exit statuses ----------------------------------------------------------------------

def test_exit_status_names_its_signal_only_when_a_signal_ended_it() -> None:
    assert ExitStatus(code=None, signal=signal.SIGKILL).signal_name == "SIGKILL"
    assert ExitStatus(code=None, signal=signal.SIGRTMIN + 6).signal_name == \
        f"SIG{signal.SIGRTMIN + 6}"
    assert ExitStatus(code=0, signal=None).signal_name is None
    assert ExitStatus(code=1, signal=None).signal_name is None
