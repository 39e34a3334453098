"""Multitask fine-tuning of the embedding network on sellers' and buyers' photos."""
