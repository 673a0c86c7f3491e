"""The read commands' input and output: out-of-range seqs and limits are refused with a
reason (exit 2), and a report or export that cannot be written ends with one line and leaves
no partial or empty file (issue #17 points 11 and 13, the read side)."""

from __future__ import annotations

import errno
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from exchange import cli as cli_module
from exchange.cli import main
from exchange.postmortem import report as report_module
from exchange.store.event_store import EventStore


@pytest.fixture
def log(spiral_log, tmp_path) -> Path:
    path = tmp_path / "spiral.db"
    shutil.copy(spiral_log, path)
    return path


def _last_seq(path: Path) -> int:
    with EventStore.open(path, mode="r") as store:
        return store.last_seq


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, *said: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    for text in said:
        assert text in result.output, result.output


# ------------------------------------------------------------------ point 13
@pytest.mark.parametrize(
    "args, said",
    [
        (["replay", "{log}", "--until", "-5"], "--until"),
        (["replay", "{log}", "--until", "0"], "--until"),
        (["inspect", "{log}", "--at", "-1"], "--at"),
        (["inspect", "{log}", "--limit", "-1"], "--limit"),
        (["report", "{log}", "-o", "{out}", "--until", "-1"], "--until"),
        (["export", "{log}", "--from", "99999999"], "beyond the log's last event"),
        (["export", "{log}", "--from", "{after}"], "beyond the log's last event ({last})"),
        (["export", "{log}", "--to", "0"], "--to"),
    ],
)
def test_out_of_range_seqs_and_limits_are_refused_with_a_reason(log, tmp_path, args, said):
    out = tmp_path / "out.html"
    last = _last_seq(log)
    result = cli(*(a.format(log=log, out=out, last=last, after=last + 1) for a in args))
    said = said.format(last=last)
    refused(result, said)
    assert not out.exists()


def test_the_last_seq_and_a_zero_limit_are_still_accepted(log):
    exported = cli("export", log, "--from", _last_seq(log))
    assert exported.output.count("\n") == 2  # header + 1 row
    shown = cli("inspect", log, "--kind", "Fill", "--limit", "0")
    assert shown.exit_code == 0 and "... (more; raise --limit)" in shown.output


# ------------------------------------------------------------------ point 11: writing fails
def _disk_fills_after(nbytes: int):
    """``open`` as the module sees it, except that a file opened for writing takes
    ``nbytes`` and then fails as a full disk does (ENOSPC)."""
    real_open = open

    def full_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if "w" not in mode:
            return f

        class Full:
            left = nbytes

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

            def write(self, text):
                f.write(text[: self.left])
                f.flush()
                self.left = max(0, self.left - len(text))
                if not self.left:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return len(text)

            def __getattr__(self, name):
                return getattr(f, name)

        return Full()

    return full_open


@pytest.mark.parametrize("written", [0, 4096])
def test_a_report_on_a_full_disk_fails_in_one_line_and_leaves_no_file(
    log, tmp_path, monkeypatch, written
):
    monkeypatch.setattr(report_module, "open", _disk_fills_after(written), raising=False)
    out = tmp_path / "out" / "report.html"
    result = cli("report", log, "-o", out)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot write" in result.output and "No space left on device" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert list(out.parent.iterdir()) == []  # no partial, no empty page


def test_a_report_over_an_existing_page_that_cannot_be_written_keeps_the_old_page(
    log, tmp_path, monkeypatch
):
    out = tmp_path / "report.html"
    out.write_text("the page before")
    monkeypatch.setattr(report_module, "open", _disk_fills_after(100), raising=False)
    assert cli("report", log, "-o", out).exit_code == 1
    assert out.read_text() == "the page before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "spiral.db"]


@pytest.mark.parametrize("written", [0, 4096])
def test_an_export_on_a_full_disk_fails_in_one_line_and_leaves_no_file(
    log, tmp_path, monkeypatch, written
):
    monkeypatch.setattr(cli_module, "open", _disk_fills_after(written), raising=False)
    out = tmp_path / "out" / "events.csv"
    result = cli("export", log, "-o", out, "--quiet")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot write" in result.output and "No space left on device" in result.output
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("command", ["report", "export"])
def test_an_output_where_no_directory_can_be_made_is_one_line(log, tmp_path, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = cli(command, log, "-o", blocker / "out.html", *(["--quiet"] * (command == "export")))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot write" in result.output
    assert len(result.output.strip().splitlines()) == 1


def _limit_file_size(nbytes: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return apply


@pytest.mark.parametrize("command", ["report", "export"])
def test_a_write_the_system_refuses_midway_leaves_no_file(log, tmp_path, command):
    # a real failure of write(2) past RLIMIT_FSIZE, in a real gpuex process
    out = tmp_path / "out"
    out.mkdir()
    target = out / ("report.html" if command == "report" else "events.csv")
    done = subprocess.run(
        [sys.executable, "-m", "exchange.cli", command, str(log), "-o", str(target)],
        capture_output=True,
        preexec_fn=_limit_file_size(64 * 1024),
        timeout=300,
    )
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert "Traceback" not in stderr and "cannot write" in stderr
    assert list(out.iterdir()) == []
