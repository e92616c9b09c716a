"""Work built on the method: edits written as sets, augmentation sets, classifiers, reader studies, quality, figures."""
