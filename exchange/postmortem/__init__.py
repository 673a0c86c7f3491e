"""The postmortem room: reading a log after the fact: the analysis, the HTML report, trends,
borrowed time, exports and the bilateral/cleared comparison.

Rooms import only the rooms before them: core < products < risk < kernel < store < credit <
postmortem < sessions.
"""

# exchange.postmortem was the analysis module until issue #20's rooms: its
# users' imports keep working
from exchange.postmortem.analysis import (  # noqa: E402, F401
    PostMortem,
    facts,
)
