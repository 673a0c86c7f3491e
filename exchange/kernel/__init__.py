"""The kernel room: the engine that sequences commands: the reference engine (`Exchange`), its
compiled twin (`CompiledExchange`, `_kernel.pyx`) and the registry that picks one.

Rooms import only the rooms before them: core < products < risk < kernel < store < credit <
postmortem < sessions.
"""
