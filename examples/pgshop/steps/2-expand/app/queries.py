"""Version 2: an order names its customer in ``customer_email``; ``customer`` is not read
or written any more (the expand's trigger keeps it filled for version 1, if it comes back)."""

NEEDS = "SELECT id, item, customer_email FROM orders LIMIT 0"
INSERT = "INSERT INTO orders (item, customer_email) VALUES (%s, %s) RETURNING id"
LIST = "SELECT id, item, customer_email FROM orders ORDER BY id DESC LIMIT 20"
