"""gpuex clients: the bot API (in-process and over a socket) and reference bots.

Depends on ``exchange`` (and through it ``matching_core``). Built out in issue #6.
"""
