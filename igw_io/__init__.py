"""Shared IO layer of both frontends: upstream pool, effect driver, logging."""
