"""The density network: modules (layers), the model (network), checkpoint
folders (checkpoint) and prediction from measured data (predict)."""
