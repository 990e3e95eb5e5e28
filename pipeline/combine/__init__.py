"""Combining predictions: the mean-shape baseline, fold/run averaging, the LightGBM stacker."""
