"""RLPD update, replay buffers, checkpoints, learner node, classifier training and bag-to-dataset conversion."""
