"""`cfnet ablate`: the paper's ablations as a plan of ordinary training runs, and their report."""
