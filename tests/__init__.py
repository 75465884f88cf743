"""dfd tests (a package, so benchmarks can reuse their helpers: `from tests import test_reliability`)."""
