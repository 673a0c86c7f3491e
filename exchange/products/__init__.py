"""The products room: what the exchange lists and how it is priced: the instrument registry, the
GPU rental and resale indices, perpetuals, residual value swaps, credit default swaps, and the
pricing models (floats inside, integers at one boundary).

Rooms import only the rooms before them: core < products < risk < kernel < store < credit <
postmortem < sessions.
"""
