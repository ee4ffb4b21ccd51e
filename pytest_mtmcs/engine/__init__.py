"""Running dialogues: the engine (turn by turn, cached), grading replies into verdicts, the guarded backend."""
