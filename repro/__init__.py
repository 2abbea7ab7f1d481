"""Forward-only learning, reproduced: F³, FOTON, FFzero and FTP behind one rule interface.

Layers (nothing points back up): ``data`` → ``models`` → ``rules`` → ``train`` → ``figures`` / ``claims``.
"""
__version__ = "0.1.0"
