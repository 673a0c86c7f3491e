"""Hostile command lines (issue #17): ``gpuex`` (``exchange.cli``) with numbers out of range,
negative, huge or not numbers at all, bad overrides, and paths that do not exist, are files,
directories or cannot be written. Whatever the options, a command either succeeds or exits
non-zero with an ``Error:`` message and no traceback (``result.exception`` is None or a
``SystemExit``), and a failed command leaves no file behind at ``--db``, ``--report`` or
``-o``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.cli import main
from exchange.sessions import session

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)

NUMBERS = [
    "-1",
    "0",
    "1",
    "7",
    "-2000",
    str(2**63),
    str(2**64),
    "99999999999999999999",
    "1e3",
    "x",
    "",
]
SETTINGS = [
    "interval_ns=1",
    "interval_ns=9223372036854775807",
    "initial_cash=9223372036854775807",
    "initial_cash=-5",
    "messages=-5",
    "messages=0",
    "traders=0",
    "traders=100000000000",
    "cash_every=nan",
    "malformed_every=inf",
    "days=true",
    "=",
    "noequals",
    "unknown_field=1",
    "stp=sideways",
    "initial_cash=1e999",
    "interval_ns=1e999",
    "messages=1e3",
    "messages=[]",
    'messages={"a": 1}',
    "seed=-1",
]


def bad_paths(tmp: Path) -> list[Path]:
    """Paths a log or a report cannot be written to (root can write anywhere chmod says not
    to, so: under a file, in /proc, a directory itself, in a directory that does not exist)."""
    a_file = tmp / "a-file.txt"
    a_file.write_text("not a directory")
    return [
        a_file / "x.db",
        Path("/proc/gpuex-fuzz/x.db"),
        tmp,
        tmp / "no-such-dir" / "deeper" / "x.db",
    ]


def leftovers(path: Path) -> list[Path]:
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.is_file()]


def clear(paths: list[Path]) -> None:
    """Remove what an earlier, successful example wrote at ``paths``."""
    for path in paths:
        for stale in leftovers(path):
            stale.unlink()


def check_result(result, *outputs: Path) -> None:
    """Success, or a clean failure: non-zero, an ``Error:`` line, no traceback, nothing left
    at ``outputs``."""
    if result.exit_code == 0:
        return
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}\n{text}"
    )
    assert "Traceback" not in text, text
    assert "Error:" in text, text
    for path in outputs:
        assert not leftovers(path), f"{leftovers(path)} left behind:\n{text}"


def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 keeps stderr apart already
        return CliRunner()


@st.composite
def run_lines(draw, tmp: Path) -> tuple[list[str], list[Path]]:
    """``gpuex run flow ...`` with a few hostile options (the session is kept tiny in case
    every option happens to be valid)."""
    db = draw(st.sampled_from([tmp / "fuzz.db", *bad_paths(tmp)]))
    args = ["run", draw(st.sampled_from(["flow", "flow", "no-such-scenario", "bad.toml"]))]
    args += ["--db", str(db), "--quiet", "--set", "messages=50", "--overwrite"]
    outputs = [db]
    for option in draw(
        st.lists(
            st.sampled_from(
                ["--seed", "--batch-size", "--snapshot-every", "--journal-after", "--durability"]
            ),
            unique=True,
            max_size=3,
        )
    ):
        value = draw(st.sampled_from([*NUMBERS, "fast"] if option == "--durability" else NUMBERS))
        args += [option, value]
    for setting in draw(st.lists(st.sampled_from(SETTINGS), max_size=2)):
        args += ["--set", setting]
    if draw(st.booleans()):
        report = draw(st.sampled_from([tmp / "fuzz.html", *bad_paths(tmp)]))
        args += ["--report", str(report)]
        outputs.append(report)
    else:
        args.append("--no-report")
    return args, outputs


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@FUZZ
@given(st.data())
def test_run_with_hostile_options_succeeds_or_fails_cleanly_leaving_no_file(cli_dir, data):
    args, outputs = data.draw(run_lines(cli_dir))
    clear(outputs)
    result = runner().invoke(main, args)
    check_result(result, *outputs)


@pytest.fixture(scope="module")
def small_log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("log") / "small.db"
    session.run("flow", path, seed=3, overrides={"messages": 300})
    return path


READ_VALUES = ["-5", "-1", "0", "1", "5", "99999999", str(2**63), str(2**64), "x", ""]


@st.composite
def read_lines(draw, log: Path, tmp: Path) -> tuple[list[str], list[Path]]:
    command = draw(st.sampled_from(["replay", "inspect", "export", "verify", "report"]))
    args, outputs = [command, str(log)], []
    options = {
        "replay": ["--until"],
        "inspect": ["--at", "--limit", "--account", "--kind"],
        "export": ["--from", "--to", "--account", "--instrument", "--format"],
        "verify": [],
        "report": ["--until", "--account"],
    }[command]
    for option in draw(
        st.lists(st.sampled_from(options), unique=True, max_size=3) if options else st.just([])
    ):
        value = draw(st.sampled_from(READ_VALUES + ["trader-01", "nobody", "Fill", "csv", "xml"]))
        args += [option, value]
    if command in ("export", "report"):
        out = draw(st.sampled_from([tmp / "out.csv", tmp / "out.html", *bad_paths(tmp)]))
        args += ["-o", str(out)]
        outputs.append(out)
    if command == "verify":
        args.append("--quiet")
    return args, outputs


@settings(FUZZ, max_examples=80)
@given(st.data())
def test_read_commands_with_hostile_options_succeed_or_fail_cleanly(small_log, cli_dir, data):
    args, outputs = data.draw(read_lines(small_log, cli_dir))
    clear(outputs)
    result = runner().invoke(main, args)
    check_result(result, *outputs)


@st.composite
def serve_lines(draw, tmp: Path) -> tuple[list[str], list[Path]]:
    """``gpuex serve demo ...`` with hostile options; a remote bot is always named and the
    connect timeout always short or invalid, so no example waits long or runs a session."""
    good = tmp / "serve.db"
    db = draw(st.sampled_from([good, good, good, *bad_paths(tmp)]))
    args = ["serve", draw(st.sampled_from(["demo", "demo", "no-such-scenario"]))]
    args += ["--db", str(db), "--quiet"]
    outputs = [db]
    for option, values in draw(
        st.lists(
            st.sampled_from(
                [
                    ("--port", ["-1", "65536", "99999999999", "x", "0"]),
                    ("--step-timeout", ["0", "-1", "nan", "1e309", "x", "0.5"]),
                    ("--seed", NUMBERS),
                    ("--host", ["", "256.0.0.1", "no such host", "127.0.0.1"]),
                ]
            ),
            unique_by=lambda pair: pair[0],
            max_size=2,
        )
    ):
        args += [option, draw(st.sampled_from(values))]
    if draw(st.booleans()):
        tokens = draw(st.sampled_from([tmp / "tokens.json", tmp / "tokens.json", *bad_paths(tmp)]))
        args += ["--tokens-file", str(tokens)]
        outputs.append(tokens)
    args += ["--remote", draw(st.sampled_from(["maker", "nobody", ""]))]
    # (no "nan" here: it hangs today -- see test_serve_refuses_a_nan_timeout below)
    args += ["--connect-timeout", draw(st.sampled_from(["0", "-1", "x", "0.2", "0.2", "0.2"]))]
    return args, outputs


@settings(FUZZ, max_examples=40)
@given(st.data())
def test_serve_with_hostile_options_fails_cleanly_leaving_no_file(cli_dir, data):
    from clients.cli import main as gpuex

    args, outputs = data.draw(serve_lines(cli_dir))
    clear(outputs)
    result = runner().invoke(gpuex, args)
    assert result.exit_code != 0  # no bot ever connects
    check_result(result, *outputs)


# FOUND BY FUZZING -- a bug in helper B's clients/cli.py (serve), left here failing on purpose
# until it is fixed there: click.FloatRange(min=0, min_open=True) lets NaN through (every
# comparison with NaN is false), so `gpuex serve demo --db X --remote maker --connect-timeout
# nan` prints "waiting up to nan s for 1 remote bot(s)" and waits forever, and
# `--step-timeout nan` is taken as a step deadline that never passes. Run as a subprocess
# under a wall-clock timeout, so that the hang fails the test instead of stopping the suite.
@pytest.mark.parametrize("option", ["--connect-timeout", "--step-timeout"])
def test_serve_refuses_a_nan_timeout(tmp_path, option):
    gpuex = Path(sys.executable).with_name("gpuex")
    db = tmp_path / "nan.db"
    command = [str(gpuex), "serve", "demo", "--db", str(db), "--remote", "maker", "--quiet"]
    command += ["--connect-timeout", "0.2", option, "nan"]  # the last value of an option wins
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{' '.join(command[1:])} still waiting after 30 s") from None
    assert done.returncode == 2, done.stdout + done.stderr  # a usage error, named
    assert f"Invalid value for '{option}'" in done.stderr and "Traceback" not in done.stderr
    assert not leftovers(db)


UNREACHABLE = ["--scheduler", "tcp://127.0.0.1:1", "--scheduler-timeout", "0.3"]


@st.composite
def sweep_lines(draw, tmp: Path) -> list[str]:
    """``gpuex sweep flow ...`` with hostile options, against a scheduler nobody listens on
    (so that nothing runs: the sweep fails, cleanly, one way or another)."""
    out = draw(st.sampled_from([tmp / "sweep", tmp / "sweep", *bad_paths(tmp)]))
    args = ["sweep", draw(st.sampled_from(["flow", "flow", "no-such-scenario"])), "-o", str(out)]
    for option, values in draw(
        st.lists(
            st.sampled_from(
                [
                    (
                        "--param",
                        [
                            "messages=10,20",
                            "x",
                            "=",
                            "messages=",
                            "messages=1e999",
                            "interval_ns=1",
                            "messages=-5",
                            "nobody=1",
                        ],
                    ),
                    ("--seeds", ["0", "-1", "1", "1000001", "x"]),
                    ("--seed-list", ["1,2", "-1", "x,,", "99999999999999999999", ""]),
                    ("--workers", ["0", "-1", "x", "1"]),
                ]
            ),
            unique_by=lambda pair: pair[0],
            max_size=3,
        )
    ):
        args += [option, draw(st.sampled_from(values))]
    return [*args, "--quiet", *UNREACHABLE]


@settings(FUZZ, max_examples=30)
@given(st.data())
def test_sweep_with_hostile_options_fails_cleanly(cli_dir, data):
    result = runner().invoke(main, data.draw(sweep_lines(cli_dir)))
    assert result.exit_code != 0  # the scheduler cannot be reached
    check_result(result)


# FOUND BY FUZZING -- a bug in helper D's sweep (exchange/cli.py, exchange/sessions/sweep.py), left
# here
# failing on purpose until it is fixed there: click.FloatRange lets NaN through, and
# `gpuex sweep flow -o OUT --seeds 1 --scheduler tcp://127.0.0.1:1 --scheduler-timeout nan`
# ends in a traceback (dask's parse_timedelta: KeyError 'Invalid time unit: nan').
def test_sweep_refuses_a_nan_scheduler_timeout(tmp_path):
    gpuex = Path(sys.executable).with_name("gpuex")
    command = [str(gpuex), "sweep", "flow", "-o", str(tmp_path / "out"), "--seeds", "1"]
    command += ["--quiet", *UNREACHABLE[:2], "--scheduler-timeout", "nan"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{' '.join(command[1:])} still running after 60 s") from None
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Invalid value for '--scheduler-timeout'" in done.stderr
    assert "Traceback" not in done.stderr
