"""esafety: the school's Acceptable Use Policy applied to web traffic, devices and the wire."""

__version__ = "0.1.0"
