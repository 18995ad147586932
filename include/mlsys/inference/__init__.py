"""serve: batch scoring with the registered champion (and the pyfunc wrapper it loads)."""
