"""Lane hardware: the barrier state machine, GPIO pins and presence inputs, lane displays."""
