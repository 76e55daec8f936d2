"""Lane cameras: what a camera string means (spec.py), frames and health (frames.py), the frame
sources (sources.py, folder.py) and the per-lane grabber thread (grabber.py).

Kept free of imports so that the settings can check a camera string without loading OpenCV.
"""
