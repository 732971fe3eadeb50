"""Flows: the body of an exchange's work, one state machine per kind of endpoint.

An :class:`~igw_core.exchange.Exchange` owns the request head, auth, routing,
"head sent" and the report; once it knows what the request is for it hands
every further event to one :class:`~igw_core.flows.base.Flow`.
"""
