"""Marshmallow schemas, mirroring app/api file names."""
