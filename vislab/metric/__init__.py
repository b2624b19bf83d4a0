"""Metric learning: losses that shape an embedding so that distances mean similarity
(:mod:`~vislab.metric.losses`: contrastive, triplet) and the miners that choose which pairs and
triplets of a batch they look at (:mod:`~vislab.metric.miners`).  The training task that uses
them lives in :mod:`vislab.tasks.metric`; class-balanced batches come from
:class:`vislab.data.sampler.BalancedBatchLoader`."""
