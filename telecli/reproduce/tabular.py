"""(being written)"""

FIGURES = ()
