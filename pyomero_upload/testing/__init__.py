"""Test support shipped with the package: the reference reader and the OMERO double.

Nothing here is used by the toolkit itself; tests, benchmarks and image
checks import it.
"""
