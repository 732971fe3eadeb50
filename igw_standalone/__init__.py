"""The standalone server on asyncio Protocols (httptools or h11, uvloop or asyncio):
the ``igw`` command."""
