"""Tools behind the scripts: haze synthesis, inference on your own photos, the demo's report.

Haze synthesis and image I/O use nothing from BasicSR themselves, but importing any of these
modules runs ``gunet_arch/__init__.py`` first, which patches BasicSR and registers the plugin.
"""
