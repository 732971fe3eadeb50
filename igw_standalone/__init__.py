"""The standalone server on anyio + h11: the ``igw`` command."""
