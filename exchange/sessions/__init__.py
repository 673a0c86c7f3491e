"""The sessions room: running a market: sessions and their resume, built-in scenarios and their
products and participants, the market's timed schedule, sweeps.

Rooms import only the rooms before them: core < products < risk < kernel < store < credit <
postmortem < sessions.
"""
