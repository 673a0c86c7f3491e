"""The core room: the vocabulary every room speaks: commands, events, the simulated clock, the
canonical state and its hash, units, and the bounds a session may ask for.

Rooms import only the rooms before them: core < products < risk < kernel < store < credit <
postmortem < sessions.
"""
