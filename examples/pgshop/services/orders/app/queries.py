"""Version 1: an order names its customer in ``customer``."""

NEEDS = "SELECT id, item, customer FROM orders LIMIT 0"
INSERT = "INSERT INTO orders (item, customer) VALUES (%s, %s) RETURNING id"
LIST = "SELECT id, item, customer FROM orders ORDER BY id DESC LIMIT 20"
