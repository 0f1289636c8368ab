# A package, so that pytest imports tests/browser/conftest.py as `browser.conftest`: as a second
# top-level `conftest` it would replace tests/conftest.py in sys.modules, and every
# `from conftest import ...` collected after it would import the wrong module (as tests/cluster/).
