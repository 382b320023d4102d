"""One module per MLproject entry point, named exactly as it (``precipgen <name>`` /
``mlflow run . -e <name>``): each declares its flags (``add_arguments``) and runs as a thin
recipe over the library (``run(args) -> exit code``). Only :mod:`precipgen.cli` and
:mod:`precipgen.demo` import them; the library never does."""
