"""The risk room: margin and its consequences: initial and variation margin, the margin cycle and
its calls, close-out, default and the waterfall, bilateral clearing under CSAs, and a listed
CDS's premiums, marks and credit-event settlement.

Rooms import only the rooms before them: core < products < risk < kernel < store < credit <
postmortem < sessions.
"""
