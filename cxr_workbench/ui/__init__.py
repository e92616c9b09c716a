"""What a person drives: the command line, the notebook widgets, the notebooks' setup."""
