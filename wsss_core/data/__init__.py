"""Datasets: the synthetic VOC-format generator, PASCAL VOC 2012, labels, downloads."""
