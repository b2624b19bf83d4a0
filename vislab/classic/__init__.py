"""Methods before deep learning: Viola-Jones face detection (``vislab.classic.viola_jones``), the
perceptron learning algorithm (``vislab.classic.perceptron``) and the bag of visual words with a
linear SVM (``vislab.classic.bovw``), the baselines of the metric-learning comparison."""
