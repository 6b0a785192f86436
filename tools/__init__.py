"""dpengine tools: training, DP-GEN, RiD, TI, analysis, benchmarks."""
