"""An example softmax-suite backend plugin: numpy in float32 working precision (see adapter.py)."""
