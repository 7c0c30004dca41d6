"""diffusers_plugins: diffusion rejection sampling (DiffRS) as a diffusers pipeline."""
