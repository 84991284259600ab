"""Networks: StyleGAN2/3 generators and the diffusion-prior transformer. They know nothing of files or the CLI."""
