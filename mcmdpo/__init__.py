"""mcmdpo: SFT, DPO and MCM-DPO training of LLaVA-family models for alt-text generation."""

__version__ = "0.1.0"
