"""The kernel theory, Trainer-free: spectral rule, closed-form and infinite-width kernels, twins,
empirical NTK, orbit pairs, the probe, agreement statistics and the kernel predictors."""
