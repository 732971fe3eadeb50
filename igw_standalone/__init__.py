"""The standalone server on asyncio Protocols (httptools or h11, uvloop or asyncio):
the ``igw`` command."""

from igw_io.compiled import honour_pure_python

honour_pure_python()  # before any compiled module is imported (IGW_PURE_PYTHON=1)
