"""Status-tracking: owns each order's state and reservation saga; publishes orders.status."""
