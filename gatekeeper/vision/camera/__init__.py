"""Lane cameras: what a camera string means, the frame sources, the per-lane grabber thread."""
