"""orderstream's four services and the command line that runs them."""
