"""The fine-tuning job (``graphopt finetune``): config, data batches, model
loading, the resumable training loop, checkpoints and plots."""
