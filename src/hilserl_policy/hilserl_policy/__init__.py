"""Networks (encoders, actor, critics), observation spec, policy actor node, reward-classifier node and export."""
