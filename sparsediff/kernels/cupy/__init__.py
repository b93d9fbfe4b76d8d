"""GPU kernels (CuPy). Not yet implemented: see the GPU backend issue."""
