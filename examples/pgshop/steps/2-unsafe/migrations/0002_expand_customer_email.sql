-- conveyor: expand
-- The first draft of 0002, which the migration-safety gate refuses: a required column
-- without a default breaks version 1's inserts (and is a contract, not an expand), and a
-- plain CREATE INDEX blocks every writer while it scans the table.
ALTER TABLE orders ADD COLUMN customer_email text NOT NULL;
CREATE INDEX orders_customer_email ON orders (customer_email);
