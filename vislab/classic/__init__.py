"""Methods before deep learning: Viola-Jones face detection (``vislab.classic.viola_jones``)."""
