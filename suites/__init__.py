"""The questions: the case catalogue and the pytest modules that ask every backend about it."""
