"""Building blocks shared by every model of the family."""
