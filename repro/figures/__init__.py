"""Sweep definitions and plots, one module per paper. Each figure section of ``params.yaml`` maps to a
function here that builds the run configs, trains what is not cached, and returns tidy DataFrames."""


def _f3(section, P, results, only=None):
    from . import f3
    return f3.run(section, P, results, only=only)


SECTIONS = {"f3_regression": _f3, "f3_mnist": _f3, "f3_variants": _f3, "f3_depth": _f3}
