"""collapse-lab VAE service (paper Sec. 3.3 / App. E): see collapse_vae.service."""
