"""Images and their ground truth: procedural phantoms, real films, boxes, the disease table, strips."""
