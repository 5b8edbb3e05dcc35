"""Image and video datasets: named sets, folders and files, decoded to float RGB tensors in [0, 1]."""
