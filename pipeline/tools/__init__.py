"""Tools beside the pipeline (bench, synthetic data, rehearse, throughput, lock files); they call the pipeline's own functions."""
