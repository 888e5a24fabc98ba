"""The science core: training, IMP chains, the shared dense prefix, baselines, tickets, adversarial
training. Plain PyTorch: it never imports Ray or MLflow (``tests/test_architecture.py``)."""
