"""PyTorch only: datasets, models, training loops, inference. No Spark or Feast imports here."""
