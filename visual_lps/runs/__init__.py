"""Run folders: their layout and rules (`folder`), the lock one process holds (`lock`), and reading the checkpoints
in them (`checkpoints`), with torch and the core alone."""
