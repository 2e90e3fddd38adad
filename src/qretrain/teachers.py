"""Where the reference teachers used to live; the module is ``qretrain.assets.teachers``.

Kept so that ``from qretrain.teachers import teacher`` (the ``qretrain teacher``
command, users' scripts) goes on working; importing it loads the assets module.
"""

from qretrain.assets.teachers import (
    DEFAULT_EPOCHS,
    TEACHERS,
    cached_teacher,
    check_teacher,
    teacher,
    teacher_path,
    teacher_record,
)

__all__ = [
    "DEFAULT_EPOCHS",
    "TEACHERS",
    "cached_teacher",
    "check_teacher",
    "teacher",
    "teacher_path",
    "teacher_record",
]
