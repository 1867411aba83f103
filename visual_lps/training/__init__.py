"""Training: the loop (`trainer`), one update as one function (`update`), its checkpoints (`checkpointing`) and
the stop signals it honours (`signals`)."""
