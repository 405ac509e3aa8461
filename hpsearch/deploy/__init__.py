"""After the search: retraining the best configuration, the model file and prediction."""
