"""The generative family (003, "Autoencoders", "Generative Adversarial Networks", "BiGANs"):
its losses, the alternating training steps, the latent-space Gaussian that sampling draws from,
and the anomaly scores of the one-class protocol.  The models are in
:mod:`vislab.models.generative`; the task that trains and evaluates them is
:mod:`vislab.tasks.generative`."""
