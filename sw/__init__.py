"""mmfree: MatMul-free language models on FPGAs."""

__version__ = "0.1.0"
