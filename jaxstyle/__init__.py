"""jaxstyle: neural style transfer in JAX/Flax (Gatys et al. 2015; Johnson et al. 2016)."""

__version__ = "0.1.0"
