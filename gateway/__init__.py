"""anpr-gateway: the site box between ANPR parking cameras and the cloud."""

__version__ = "0.1.0"
