"""The box type the crop's detectors and camera path share (no OpenCV here: the planner,
which runs in the Cloud Function, imports the path's arithmetic)."""

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels
