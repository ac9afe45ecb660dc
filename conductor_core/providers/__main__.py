"""`python -m conductor_core.providers`: every provider's variables, default and listed models
(with retirement dates), from their specs."""

from .spec import describe

print(describe())
