"""Fine-tune any of the zoo's models on your own data: `python -m experiments.finetune` (see __main__)."""
