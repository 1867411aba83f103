"""Networks and their parts: MLPs, the critic, the latent actor, the MeanFlow prior, the flow policy, the sphere
of latent noise, image encoders, the encoder set agents share, augmentations, and how they are compiled."""
