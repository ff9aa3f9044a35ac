# A package, so that pytest imports tests/netlab/conftest.py as
# "netlab.conftest": tests/e2e's modules import their own conftest by the
# plain name "conftest", which a second top-level conftest would replace
# when both directories run in one pytest session.
