"""The data: datasets in PASCAL VOC 2012 layout and everything that reads them. ``layout``
knows the files of a dataset root (split lists, class names, images, masks) and reads them;
``voc`` what is VOC-specific (its 20 classes); ``palette`` the label-mask PNGs; ``labels``
the image-level label tables; ``transforms`` the joint image/mask transforms; ``datasets``
the torch Datasets; ``synthetic`` the synthetic dataset generator; ``download`` and
``voc_prepare`` fetch, check and prepare the VOC 2012 and SBD archives; ``image_files`` the
image files and folders given on a command line (``wsss predict``, ``wsss explain``)."""
