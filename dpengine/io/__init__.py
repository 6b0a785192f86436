"""Output files of an MD run: AMBER NetCDF trajectories and restarts, thermo and model-deviation logs."""
