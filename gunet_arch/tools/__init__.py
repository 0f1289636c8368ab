"""Tools behind the scripts: haze synthesis, inference on your own photos, the demo's report.

Nothing here registers with BasicSR, so importing a tool costs only what the tool itself needs.
"""
