"""The Graph simulator: a faithful, fault-injecting stand-in for graph.facebook.com.

`create_sim_app(config)` builds the aiohttp application; `load_config(path)` reads a TOML
configuration over the documented defaults.
"""

from gateway.sim.config import SimConfig, SimConfigError, load_config, parse_config
from gateway.sim.server import create_sim_app

__all__ = ["SimConfig", "SimConfigError", "create_sim_app", "load_config", "parse_config"]
