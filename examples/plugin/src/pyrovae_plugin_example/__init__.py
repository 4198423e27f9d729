"""An example pyrovae plugin: a Laplace likelihood and a Student-t prior."""
