"""igw's Sans-IO core: the gateway's decisions as pure state machines.

Start at :class:`Exchange`: feed it :mod:`events`, perform the :mod:`effects`
it returns. Nothing here does IO or reads a clock or the environment.
"""

from igw_core.config import ConfigError, Settings, load_settings
from igw_core.exchange import Exchange, State
from igw_core.gateway import Gateway

__all__ = ["ConfigError", "Exchange", "Gateway", "Settings", "State", "load_settings"]
