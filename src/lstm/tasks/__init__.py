"""Tasks end to end (data, model, training, report); the CLI is a thin shell over these."""
