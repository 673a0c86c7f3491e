"""The pipes between a process and its helpers (:class:`exchange.store.helper.Channel`): whole
messages, framed as :mod:`multiprocessing.connection` frames them, so that either end may be
a ``multiprocessing`` Connection (decision 110)."""

from __future__ import annotations

import os
import struct
import threading
from multiprocessing.connection import Connection

import pytest

import exchange.store.helper as helper
from exchange.store.helper import Channel

MESSAGES = [b"", b"x", b"a message", bytes(range(256)) * 1000]  # the last: past a pipe's buffer


def _pipe() -> tuple[int, int]:
    return os.pipe()


def _sent_in_a_thread(send, messages) -> threading.Thread:
    thread = threading.Thread(target=lambda: [send(m) for m in messages])
    thread.start()
    return thread


@pytest.mark.parametrize("channel_writes", [True, False])
def test_a_channel_and_a_multiprocessing_connection_read_each_others_messages(channel_writes):
    read_fd, write_fd = _pipe()
    if channel_writes:
        reader, writer = Connection(read_fd, writable=False), Channel(write_fd)
    else:
        reader, writer = Channel(read_fd), Connection(write_fd, readable=False)
    thread = _sent_in_a_thread(writer.send_bytes, MESSAGES)
    assert [reader.recv_bytes() for _ in MESSAGES] == MESSAGES
    thread.join()
    writer.close()
    reader.close()


def test_send_many_writes_each_message_as_send_bytes_would():
    read_fd, write_fd = _pipe()
    reader, writer = Connection(read_fd, writable=False), Channel(write_fd)
    thread = threading.Thread(target=writer.send_many, args=MESSAGES)
    thread.start()
    assert [reader.recv_bytes() for _ in MESSAGES] == MESSAGES
    thread.join()
    writer.close()
    reader.close()


def test_a_message_past_the_short_frame_is_framed_long_both_ways(monkeypatch):
    """Past 2 GiB a length is -1 and then 8 bytes (multiprocessing's framing): tried here
    with the short frame's limit lowered to 3 bytes."""
    monkeypatch.setattr(helper, "_MAX_SHORT", 3)
    read_fd, write_fd = _pipe()
    reader, writer = Connection(read_fd, writable=False), Channel(write_fd)
    writer.send_bytes(b"long one")
    assert os.read(read_fd, 20) == struct.pack("!iQ", -1, 8) + b"long one"
    writer.send_bytes(b"long two")
    assert reader.recv_bytes() == b"long two"  # multiprocessing reads the long frame
    os.write(write_fd, struct.pack("!iQ", -1, 5) + b"hello")
    mine = Channel(os.dup(read_fd))
    assert mine.recv_bytes() == b"hello"
    for end in (mine, writer, reader):
        end.close()


def test_the_end_of_the_pipe_reads_as_eof_even_inside_a_message():
    read_fd, write_fd = _pipe()
    reader = Channel(read_fd)
    os.write(write_fd, struct.pack("!i", 10) + b"only5")
    os.close(write_fd)
    with pytest.raises(EOFError):
        reader.recv_bytes()
    with pytest.raises(EOFError):
        reader.recv_bytes()
    reader.close()


def test_poll_says_whether_a_message_or_the_end_of_the_pipe_waits():
    read_fd, write_fd = _pipe()
    reader, writer = Channel(read_fd), Channel(write_fd)
    assert not reader.poll()
    writer.send_bytes(b"m")
    assert reader.poll() and reader.recv_bytes() == b"m"
    assert not reader.poll(0.01)
    writer.close()
    assert reader.poll()  # the end of the pipe: a read returns at once
    reader.close()


def test_a_closed_channel_refuses_use_and_closes_once():
    read_fd, write_fd = _pipe()
    reader, writer = Channel(read_fd), Channel(write_fd)
    writer.close()
    writer.close()
    assert writer.closed and not reader.closed
    for use in (lambda: writer.send_bytes(b"x"), writer.fileno, writer.poll):
        with pytest.raises(OSError, match="closed"):
            use()
    reader.close()
    with pytest.raises(OSError, match="closed"):
        reader.recv_bytes()


def test_writing_to_a_pipe_nobody_reads_is_a_broken_pipe():
    read_fd, write_fd = _pipe()
    os.close(read_fd)
    writer = Channel(write_fd)
    with pytest.raises(BrokenPipeError):
        writer.send_bytes(b"nobody")
    writer.close()


def test_a_channel_polls_a_descriptor_past_select_s_limit():
    """A process with many files open gives its pipes descriptors past 1023, which
    ``select`` refuses: a Channel polls with ``poll(2)``."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    high = 1500
    if soft <= high:
        if hard != resource.RLIM_INFINITY and hard <= high:
            pytest.skip(f"no descriptor past {high} can be opened here (hard limit {hard})")
        resource.setrlimit(resource.RLIMIT_NOFILE, (high + 1, hard))
    read_fd, write_fd = _pipe()
    try:
        os.dup2(read_fd, high)
        reader, writer = Channel(high), Channel(write_fd)
        assert not reader.poll()
        writer.send_bytes(b"far")
        assert reader.poll() and reader.recv_bytes() == b"far"
        reader.close()
        writer.close()
    finally:
        os.close(read_fd)
        if soft <= high:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
