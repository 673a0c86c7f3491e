"""Fuzz tests (issue #17): hostile and malformed input at the exchange, scenario files, the
socket gateway and the CLI; each asserts a clear rejection, no traceback, and nothing changed
but the rejection's own event."""
