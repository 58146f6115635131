"""bachsformer: learn the musical vocabulary of J.S. Bach from MIDI files and write new music in it.

midi.py reads and writes quarters; data.py holds the corpus, its split and datasets; vqvae.py the
Ludovico VQ-VAE; gpt.py the transformer; sampling.py generation; training.py the shared loop.
"""

__version__ = "0.1.0"
