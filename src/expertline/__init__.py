"""expertline: routes contact-center work to enterprise experts by IM presence."""

__version__ = "0.1.0"
