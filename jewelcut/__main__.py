"""`python -m jewelcut`: the `jewelcut` command where the package is on the path but not
installed (a bare GPU machine, scripts/gpu_train_burst.sh)."""

from jewelcut.cli import app

app(prog_name="jewelcut")
