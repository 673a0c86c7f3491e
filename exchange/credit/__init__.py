"""The credit room: the second seed's credit economy: labs, take-or-pay books, neoclouds and
hyperscalers as a monthly agent model, and its schedule on the exchange's clock.

Rooms import only the rooms before them: core < products < risk < kernel < store < credit <
postmortem < sessions.
"""
