"""The sequence family (003, "Recurrent Neural Networks", "Seq2Seq and Word Embedding"):
recurrent cells and layers unrolled for backpropagation through time, attention, the text
pipeline (vocabulary, special tokens, padded batches) and decoding (greedy, beam search).
The recurrent cells and layers are in :mod:`vislab.sequence.rnn`."""
