"""Graph Safety Gateway: a reverse proxy that makes Facebook Graph campaign creation safe."""

__version__ = "0.1.0"
