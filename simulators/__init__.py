"""tidegate-sim: a fake sensor fleet for load tests and end-to-end verification."""
